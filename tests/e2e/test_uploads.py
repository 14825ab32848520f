"""Uploads stream with flat memory; register-by-URI checks the digest first."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, REPO, make_settings, run_cli, settings_env

from mlledger.client import LedgerClient, LedgerClientError
from service.app import create_app
from service.bootstrap import Services

UPLOAD_MB = 128


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    settings = make_settings("sqlite", tmp_path / "data")
    migrated = run_cli(settings, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--no-projector"],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_a_large_upload_streams_with_flat_server_memory(server: tuple[str, int], tmp_path: Path) -> None:
    base, pid = server
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as handle:
        for _ in range(UPLOAD_MB):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            handle.write(chunk)
    client = LedgerClient(base, ADMIN_KEY)
    client.me()  # warm up: imports and first requests are not the upload's memory
    baseline = _peak_rss_mb(pid)

    written = client.upload_dataset("big", big, format="other", filename="big.bin")

    growth = _peak_rss_mb(pid) - baseline
    recorded = client.request("GET", f"/v1/dataset-versions/{written.id}")
    assert recorded["digest"] == "sha256:" + digest.hexdigest()
    assert recorded["size"] == UPLOAD_MB * 1024 * 1024
    assert growth < UPLOAD_MB / 4, f"server peak memory grew by {growth:.0f} MB for a {UPLOAD_MB} MB upload"


@pytest.fixture
def api(services: Services) -> Iterator[LedgerClient]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        yield LedgerClient(api_key=ADMIN_KEY, http=http)


def test_register_by_uri_with_a_wrong_digest_records_nothing(api: LedgerClient, services: Services) -> None:
    import_dir = services.settings.resolved_import_dir
    import_dir.mkdir(parents=True, exist_ok=True)
    data = import_dir / "credit.csv"
    data.write_bytes(b"age,income\n30,1000\n")
    before = services.ledger.position()
    blobs_before = sorted(services.settings.blobs_dir.rglob("*")) if services.settings.blobs_dir.exists() else []

    with pytest.raises(LedgerClientError) as caught:
        api.register_dataset("credit", data.as_uri(), "sha256:" + "0" * 64)

    assert caught.value.status == 422
    assert caught.value.field == "digest"
    assert services.ledger.position() == before
    after = sorted(services.settings.blobs_dir.rglob("*")) if services.settings.blobs_dir.exists() else []
    assert [p for p in after if p.is_file()] == [p for p in blobs_before if p.is_file()]


def test_register_by_uri_with_the_right_digest_profiles_the_file(api: LedgerClient, services: Services) -> None:
    import_dir = services.settings.resolved_import_dir
    import_dir.mkdir(parents=True, exist_ok=True)
    content = b"age,income,city\n30,1000.5,Oslo\n41,,Rome\n"
    data = import_dir / "credit.csv"
    data.write_bytes(content)

    written = api.register_dataset("credit", data.as_uri(), "sha256:" + hashlib.sha256(content).hexdigest())

    recorded = api.request("GET", f"/v1/dataset-versions/{written.id}")
    assert recorded["row_count"] == 2
    assert recorded["schema"] == [
        {"name": "age", "type": "int"},
        {"name": "income", "type": "float"},
        {"name": "city", "type": "string"},
    ]
    assert recorded["profile"][1]["missing"] == 1


def test_a_uri_outside_the_import_directory_is_refused(api: LedgerClient, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_bytes(b"a\n1\n")

    with pytest.raises(LedgerClientError) as caught:
        api.register_dataset("x", outside.as_uri(), "sha256:" + hashlib.sha256(b"a\n1\n").hexdigest())

    assert caught.value.status == 422
    assert caught.value.field == "uri"


def test_an_upload_over_the_limit_is_refused_and_leaves_no_file(services: Services, tmp_path: Path) -> None:
    services.settings.max_upload_bytes = 1000
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        api = LedgerClient(api_key=ADMIN_KEY, http=http)
        before = services.ledger.position()

        with pytest.raises(LedgerClientError) as caught:
            api.upload_dataset("big", b"x" * 5000, format="other")

    assert caught.value.status == 413
    assert services.ledger.position() == before
    leftovers = (
        list((services.settings.blobs_dir / "tmp").glob("*")) if (services.settings.blobs_dir / "tmp").exists() else []
    )
    assert leftovers == []
