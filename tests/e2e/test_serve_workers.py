"""``mlledger serve --workers N``: API processes only, refused with the in-process projector or runner."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN_KEY, REPO, make_settings, run_cli, settings_env


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


@pytest.mark.slow
def test_two_api_workers_serve_the_same_ledger(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    assert run_cli(settings, "migrate").returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", "2", "--no-projector",
         "--no-runner"],
        env=settings_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        names = {httpx.get(f"{base}/v1/me", headers=headers, timeout=5).json()["name"] for _ in range(6)}
        assert names == {"admin"}
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert output.count("Started server process") == 2, output
