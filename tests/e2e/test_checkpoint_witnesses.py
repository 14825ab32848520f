"""``mlledger checkpoint`` submits the checkpoint it publishes to the configured witnesses, as the
projector does, and prints the note with their cosignatures (real witness processes; SQLite and
PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ledger import REPO, drop_schema, make_settings, settings_env

from domain.integrity.checkpoint import parse_signed_note, verifier_key, verify_checkpoint
from domain.integrity.cosignature import parse_cosigner_vkey, valid_cosigners
from domain.integrity.keys import raw_public_key
from service.bootstrap import open_services
from service.ops.workload import append_events
from service.settings import Settings
from service.store import keystore
from tests.support.witnesses import WitnessProcess

ORIGIN = "mlledger.local/ledger"


@dataclass
class Ledger:
    settings: Settings
    witnesses: list[WitnessProcess]

    def grow(self, events: int) -> None:
        services = open_services(self.settings)
        try:
            append_events(services.ledger, events, batch=10)
        finally:
            services.close()

    def checkpoint(self) -> subprocess.CompletedProcess[str]:
        env = settings_env(self.settings)
        env.update({"MLLEDGER_WITNESSES": self.settings.witnesses, "MLLEDGER_WITNESS_POLICY": "2"})
        return subprocess.run(
            [sys.executable, "-m", "service", "checkpoint"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def cosigners_of(self, note: str) -> set[str]:
        return set(valid_cosigners(note, [parse_cosigner_vkey(w.vkey) for w in self.witnesses]))


@pytest.fixture
def ledger(backend: str, tmp_path: Path) -> Iterator[Ledger]:
    data = tmp_path / "data"
    signer, _ = keystore.load_or_create(data / "keys")
    log_vkey = verifier_key(ORIGIN, raw_public_key(signer.public_key))
    witnesses = [WitnessProcess(tmp_path / f"w{i}", [log_vkey], name=f"witness.test/w{i}").start() for i in (1, 2)]
    listed = ",".join(f"w{i}={w.url}={w.vkey}" for i, w in enumerate(witnesses, start=1))
    settings = make_settings(backend, data, witnesses=listed, witness_policy="2", log_origin=ORIGIN)
    open_services(settings, migrate=True).close()
    try:
        yield Ledger(settings, witnesses)
    finally:
        for witness in witnesses:
            witness.kill()
        if backend == "postgres":
            drop_schema(settings.database_schema)


def test_the_checkpoint_command_has_it_cosigned_by_the_witnesses(ledger: Ledger) -> None:
    ledger.grow(20)

    done = ledger.checkpoint()

    assert done.returncode == 0, done.stderr
    signer, _ = keystore.load_or_create(ledger.settings.keys_dir)
    checkpoint = verify_checkpoint(done.stdout, ORIGIN, signer.public_key)
    assert checkpoint.tree_size > 20
    assert ledger.cosigners_of(done.stdout) == {"witness.test/w1", "witness.test/w2"}
    assert "witnessed: cosigned by w1, w2, which meets the witness policy" in done.stderr


def test_a_witness_that_is_down_is_named_and_catches_up_at_the_next_checkpoint_command(ledger: Ledger) -> None:
    ledger.grow(10)
    assert ledger.checkpoint().returncode == 0
    ledger.witnesses[1].kill()
    ledger.grow(10)

    partly = ledger.checkpoint()
    ledger.witnesses[1].start()
    caught_up = ledger.checkpoint()

    assert partly.returncode == 0, partly.stderr
    assert ledger.cosigners_of(partly.stdout) == {"witness.test/w1"}
    assert "not witnessed yet: cosigned by w1" in partly.stderr and "not cosigned by: w2" in partly.stderr
    assert caught_up.returncode == 0, caught_up.stderr
    assert "the latest checkpoint already covers the whole log" in caught_up.stderr
    assert parse_signed_note(caught_up.stdout)[0] == parse_signed_note(partly.stdout)[0]  # the same checkpoint
    assert ledger.cosigners_of(caught_up.stdout) == {"witness.test/w1", "witness.test/w2"}
    assert "witnessed: cosigned by w1, w2" in caught_up.stderr
