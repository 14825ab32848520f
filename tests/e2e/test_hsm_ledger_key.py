"""A whole ledger with its key in a SoftHSM2 token, through real processes: ``mlledger migrate``,
the demo (serving, 1,000 signed predictions, an export), ``mlledger checkpoint`` and ``mlledger
verify`` all pass, the key the ledger publishes is the token's, and no private key is on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.ledger import REPO
from support.softhsm import MODULE, TOKEN, softhsm

from domain.integrity.keys import load_public_key_pem, raw_public_key


def _mlledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_a_ledger_keyed_in_the_token_serves_predicts_checkpoints_and_verifies(tmp_path: Path) -> None:
    hsm = softhsm()
    data = tmp_path / "data"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLLEDGER_DATA_DIR": str(data),
        "MLLEDGER_KEY_URI": hsm.uri("ledger", pin="source"),
        "MLLEDGER_PKCS11_MODULE": MODULE,
        **hsm.env(),
    }

    migrated = _mlledger(env, "migrate")
    demo = _mlledger(env, "demo")
    checkpoint = _mlledger(env, "checkpoint")
    verified = _mlledger(env, "verify")
    shown = _mlledger(env, "keys", "show")

    assert migrated.returncode == 0, migrated.stderr
    assert demo.returncode == 0, demo.stderr
    assert "served 1000 signed predictions" in demo.stdout and "exported " in demo.stdout
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "with 1 ledger key(s)" in verified.stdout and "checkpoint(s) verified" in verified.stdout
    assert shown.returncode == 0 and f"held in: pkcs11:token={TOKEN};object=ledger" in shown.stdout
    published = raw_public_key(load_public_key_pem(shown.stdout[shown.stdout.index("-----BEGIN") :]))
    assert published == hsm.public_key("ledger")
    assert not (data / "keys" / "ledger.pem").exists()
    assert [p for p in data.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()] == []
