"""Runners outside the service: runner principals, the ledger API in a subprocess, runner processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.application.auth import new_token
from service.bootstrap import Services
from support.ledger import REPO, settings_env

ADMIN_ACTOR = "system:tests"


@dataclass(frozen=True)
class RunnerPrincipal:
    """A principal with the runner role and its API key."""

    id: str
    api_key: str


def runner_principal(services: Services, name: str = "runner-1") -> RunnerPrincipal:
    """Register a service account with the runner role and issue its API key."""
    principal = services.ledger.register_principal(name, "service", ["runner"], actor=ADMIN_ACTOR)
    token = new_token()
    services.ledger.issue_api_key(principal.id, token, "runner", actor=ADMIN_ACTOR)
    return RunnerPrincipal(principal.id, token)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ledger_api(services: Services, log: Path, *serve_args: str) -> Iterator[str]:
    """``mlledger serve --no-runner [SERVE_ARGS]`` in a subprocess on a free port; yields its URL."""
    port = free_port()
    env = settings_env(services.settings)
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-runner"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, *serve_args],
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the ledger API did not start"
            time.sleep(0.2)
        yield url
    finally:
        with_signal(process, signal.SIGTERM)


def with_signal(process: subprocess.Popen[bytes], signum: int, timeout: float = 60) -> None:
    """Send ``signum`` to the process group and wait for it to exit (SIGKILL after ``timeout``)."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def runner_env(
    url: str, principal: RunnerPrincipal, key_file: Path, *, quick_heartbeats: bool = True
) -> dict[str, str]:
    """The whole environment of a runner process: the ledger URL, its API key and key file; no ledger
    settings (no data directory, no database URL). ``quick_heartbeats``: every 0.5 s, 4 s timeout (tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    env.update(
        {
            "MLLEDGER_LEDGER_URL": url,
            "MLLEDGER_RUNNER_API_KEY": principal.api_key,
            "MLLEDGER_RUNNER_KEY_FILE": str(key_file),
        }
    )
    if quick_heartbeats:
        env.update({"MLLEDGER_HEARTBEAT_SECONDS": "0.5", "MLLEDGER_HEARTBEAT_TIMEOUT_SECONDS": "4"})
    return env


def start_runner(
    url: str,
    principal: RunnerPrincipal,
    key_file: Path,
    log: Path,
    *args: str,
    preexec: list[str] | None = None,
    cwd: Path = REPO,
) -> subprocess.Popen[bytes]:
    """``mlledger runner ARGS`` in a subprocess of its own session (``preexec``: a command prefix, e.g.
    setpriv to run it as another user)."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [*(preexec or []), sys.executable, "-m", "service", "runner", *args],
            env=runner_env(url, principal, key_file),
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
