"""``mlledger serve --workers N``: API processes only, refused with the in-process projector or runner;
the workers share one ledger and the console's sessions, and each accepts on a socket of its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.ledger import ADMIN_KEY, REPO, make_settings, run_cli, settings_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_workers_need_the_projector_and_runner_elsewhere(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    assert run_cli(settings, "migrate").returncode == 0

    refused = run_cli(settings, "serve", "--workers", "2", timeout=60)

    assert refused.returncode == 2
    assert "--no-projector --no-runner" in refused.stderr and "Traceback" not in refused.stderr


@dataclass
class Served:
    """``mlledger serve --workers 2`` on a fresh SQLite ledger."""

    base: str
    pid: int
    output: str = ""
    """Everything the server printed (set once it has stopped)."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The server, ready; once stopped, its output must show that two worker processes started."""
    settings = make_settings("sqlite", tmp_path / "data")
    assert run_cli(settings, "migrate").returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-projector",
            "--no-runner",
        ],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Served(f"http://127.0.0.1:{port}", process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        server.output = process.communicate(timeout=30)[0].decode()
    assert server.output.count("Started server process") >= 2, server.output


@pytest.mark.slow
def test_two_api_workers_serve_the_same_ledger(served: Served) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    names = {httpx.get(f"{served.base}/v1/me", headers=headers, timeout=5).json()["name"] for _ in range(6)}

    assert names == {"admin"}


@pytest.mark.slow
def test_a_console_session_holds_on_every_api_worker(served: Served) -> None:
    # No kept-alive connections: each request is accepted anew, by whichever worker takes it.
    with httpx.Client(base_url=served.base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as browser:
        form = browser.get("/console/login")
        found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert found is not None
        login = browser.post("/console/login", data={"api_key": ADMIN_KEY, "csrf_token": found.group(1)})
        assert login.status_code == 303 and "mll_console" in browser.cookies

        answers = [browser.get("/console/ledger").status_code for _ in range(10)]

    assert answers == [200] * 10


def _listeners(port: int) -> set[int]:
    """The inodes of the sockets listening on ``port`` (``/proc/net/tcp``, state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            found.add(int(fields[9]))
    return found


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _workers(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the sockets from Linux's /proc")
def test_each_worker_accepts_on_its_own_socket_and_a_replaced_one_leaves_none_behind(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])

    def owners() -> dict[int, set[int]]:
        listening = _listeners(port)
        return {pid: _sockets_of(pid) & listening for pid in [served.pid, *_workers(served.pid)]}

    def serve_fresh_connections(count: int) -> list[int]:
        # A new connection each time: the kernel picks a worker's socket for each.
        with httpx.Client(base_url=served.base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            return [c.get("/healthz").status_code for _ in range(count)]

    by_process = owners()
    listening_workers = [pid for pid, inodes in by_process.items() if pid != served.pid and len(inodes) == 1]
    assert len(listening_workers) == 2 and not by_process[served.pid]  # the supervisor only holds the port
    assert len(_listeners(port)) == 2

    os.kill(listening_workers[0], signal.SIGKILL)  # its socket goes with it; the supervisor starts another
    deadline = time.monotonic() + 60
    while True:
        by_process = owners()
        replaced = [pid for pid, inodes in by_process.items() if pid != served.pid and len(inodes) == 1]
        if listening_workers[0] not in by_process and len(replaced) == 2 and len(_listeners(port)) == 2:
            break
        assert time.monotonic() < deadline, f"no replacement worker is listening: {by_process}"
        time.sleep(0.2)

    assert serve_fresh_connections(30) == [200] * 30
