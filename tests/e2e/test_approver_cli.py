"""Approvers without Python: ``mlledger keys generate``, ``keys register``, ``approve`` and ``reject``
against a real ledger API in a subprocess, each signing locally with the approver's own key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.governance_world import World, train_and_register
from support.ledger import ADMIN_KEY, REPO
from support.runner_http import ledger_api

from mlledger import LedgerClient
from service.bootstrap import Services

MODEL = "credit-risk"


@dataclass
class Ledger:
    """The API in a subprocess, and the people who use it."""

    url: str
    world: World

    def key_of(self, name: str) -> str:
        return self.world.people[name].client.headers["Authorization"].removeprefix("Bearer ")

    def mlledger(self, *args: str, as_: str | None = None) -> subprocess.CompletedProcess[str]:
        """``mlledger ARGS`` as a separate process, configured only by MLLEDGER_URL and MLLEDGER_API_KEY."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
        env["MLLEDGER_URL"] = self.url
        if as_ is not None:
            env["MLLEDGER_API_KEY"] = self.key_of(as_)
        return subprocess.run(
            [sys.executable, "-m", "service", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def ledger(services: Services, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_api(services, tmp_path / "api.log") as url, httpx.Client(base_url=url, timeout=60) as http:
        world = World(http, LedgerClient(url, ADMIN_KEY))  # type: ignore[arg-type]
        world.add("alice", ["data_scientist"])
        world.add("bob", ["approver"])
        world.add("carol", ["approver"])
        yield Ledger(url, world)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlledger: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_two_approvers_approve_a_version_from_the_command_line(ledger: Ledger, tmp_path: Path) -> None:
    number = train_and_register(ledger.world, "alice", MODEL)
    for name in ("bob", "carol"):
        key = tmp_path / f"{name}.pem"
        generated = ledger.mlledger("keys", "generate", "--out", str(key))
        assert generated.returncode == 0, generated.stderr
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert "BEGIN PUBLIC KEY" in generated.stdout and "mlledger keys register" in generated.stdout
        registered = ledger.mlledger("keys", "register", "--key", str(key), as_=name)
        assert registered.returncode == 0, registered.stderr

    first = ledger.mlledger(
        "approve", MODEL, str(number), "--key", str(tmp_path / "bob.pem"), "--reason", "ok", as_="bob"
    )
    second = ledger.mlledger(
        "approve", MODEL, str(number), "--key", str(tmp_path / "carol.pem"), "--reason", "fine", as_="carol"
    )

    assert first.returncode == 0 and first.stdout.strip().endswith("the version is now pending"), first.stderr
    assert second.returncode == 0 and second.stdout.strip().endswith("the version is now approved"), second.stderr
    version = ledger.world.people["alice"].client.model_version(MODEL, number)
    assert (version.state, len(version.approvers)) == ("approved", 2)


def test_an_approver_rejects_a_version_from_the_command_line(ledger: Ledger, tmp_path: Path) -> None:
    number = train_and_register(ledger.world, "alice", MODEL)
    key = tmp_path / "bob.pem"
    ledger.mlledger("keys", "generate", "--out", str(key))
    ledger.mlledger("keys", "register", "--key", str(key), as_="bob")

    rejected = ledger.mlledger("reject", MODEL, str(number), "--key", str(key), "--reason", "leaks age", as_="bob")

    assert rejected.returncode == 0, rejected.stderr
    assert ledger.world.people["alice"].client.model_version(MODEL, number).state == "rejected"


def test_keys_generate_refuses_to_overwrite_a_key(ledger: Ledger, tmp_path: Path) -> None:
    key = tmp_path / "bob.pem"
    ledger.mlledger("keys", "generate", "--out", str(key))
    before = key.read_bytes()

    again = ledger.mlledger("keys", "generate", "--out", str(key))

    assert "refusing to overwrite" in one_line_error(again)
    assert key.read_bytes() == before


def test_command_line_errors_are_one_line_and_a_non_zero_exit(ledger: Ledger, tmp_path: Path) -> None:
    number = train_and_register(ledger.world, "alice", MODEL)
    key, garbage = tmp_path / "bob.pem", tmp_path / "garbage.pem"
    ledger.mlledger("keys", "generate", "--out", str(key))
    ledger.mlledger("keys", "register", "--key", str(key), as_="bob")
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")

    bad_key = ledger.mlledger("approve", MODEL, str(number), "--key", str(garbage), "--reason", "x", as_="bob")
    no_file = ledger.mlledger(
        "approve", MODEL, str(number), "--key", str(tmp_path / "none.pem"), "--reason", "x", as_="bob"
    )
    unknown = ledger.mlledger("approve", "no-such-model", "1", "--key", str(key), "--reason", "x", as_="bob")
    no_api_key = ledger.mlledger("approve", MODEL, str(number), "--key", str(key), "--reason", "x")
    unregistered = ledger.mlledger("keys", "generate", "--out", str(tmp_path / "other.pem"))
    foreign = ledger.mlledger(
        "approve", MODEL, str(number), "--key", str(tmp_path / "other.pem"), "--reason", "x", as_="carol"
    )

    assert "not an Ed25519 private key" in one_line_error(bad_key)
    assert "no key file" in one_line_error(no_file)
    assert "404" in one_line_error(unknown)
    assert "no API key" in one_line_error(no_api_key)
    assert unregistered.returncode == 0
    one_line_error(foreign)  # a key nobody registered for carol signs nothing
    assert ledger.world.people["alice"].client.model_version(MODEL, number).state == "pending"
