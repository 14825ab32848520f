"""Benchmark helpers for runners outside the service: the ledger API in subprocesses and runner principals.

Runners hold no ledger key and no database credentials: they reach the ledger
only through its API, as a principal with the ``runner`` role.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.append import ledger_env
from service.application.auth import new_token
from service.bootstrap import Services
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ACTOR = "user:bench"


def runner_principal(services: Services, name: str = "bench-runner") -> str:
    """Register a service account with the runner role; return a fresh API key of it."""
    principal = services.ledger.register_principal(name, "service", ["runner"], actor=ACTOR)
    token = new_token()
    services.ledger.issue_api_key(principal.id, token, "bench", actor=ACTOR)
    return token


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ledger_api(settings: Settings, log: Path, workers: int = 1) -> Iterator[str]:
    """``mlledger serve --no-projector --no-runner [--workers N]`` on a free loopback port; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-projector", "--no-runner", "--workers", str(workers)]
    env = ledger_env(settings)
    env["MLLEDGER_ENVIRONMENT"] = settings.environment
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"the ledger API exited:\n{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("the ledger API did not start within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def runner_env(url: str, api_key: str, key_file: Path) -> dict[str, str]:
    """A runner's whole environment: the ledger's URL, its API key and key file, no ledger settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    env.update(
        {"MLLEDGER_LEDGER_URL": url, "MLLEDGER_RUNNER_API_KEY": api_key, "MLLEDGER_RUNNER_KEY_FILE": str(key_file)}
    )
    return env
