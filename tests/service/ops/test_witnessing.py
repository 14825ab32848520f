"""The ledger and two real witness processes (SQLite and PostgreSQL): each new checkpoint is
submitted, cosignatures are stored and served, the k-of-n policy decides what counts as
witnessed, and a witness that was down catches up on a later checkpoint."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, REPO, drop_schema, make_settings, run_cli, settings_env

from domain.integrity.checkpoint import parse_signed_note, parse_verifier_key, verifier_key, verify_checkpoint
from domain.integrity.cosignature import parse_cosigner_vkey, valid_cosigners
from domain.integrity.keys import raw_public_key
from projections import transparency_log as tlog
from service.app import create_app
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due, run_once
from service.ops.witnessing import latest_witnessed, submit_to_witnesses, witness_policy
from service.ops.workload import append_events
from service.store import keystore
from tests.support.witnesses import WitnessProcess

ORIGIN = "mlledger.local/ledger"


@dataclass
class World:
    services: Services
    witnesses: list[WitnessProcess]

    def grow(self, events: int) -> int:
        append_events(self.services.ledger, events, batch=10)
        self.services.runner.catch_up()
        published = publish_checkpoint_if_due(self.services, force=True)
        assert published is not None
        return published.tree_size

    def cosigned_sizes(self) -> dict[str, int]:
        with self.services.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    tlog.tlog_cosignatures.c.witness_vkey, sa.func.max(tlog.tlog_cosignatures.c.tree_size)
                ).group_by(tlog.tlog_cosignatures.c.witness_vkey)
            )
            by_vkey = {vkey: int(size) for vkey, size in rows}
        return {w.name: by_vkey.get(w.vkey, 0) for w in self.witnesses}


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[World]:
    data = tmp_path / "data"
    signer, _ = keystore.load_or_create(data / "keys")
    log_vkey = verifier_key(ORIGIN, raw_public_key(signer.public_key))
    witnesses = [WitnessProcess(tmp_path / f"w{i}", [log_vkey], name=f"witness.test/w{i}").start() for i in (1, 2)]
    listed = ",".join(f"w{i}={w.url}={w.vkey}" for i, w in enumerate(witnesses, start=1))
    settings = make_settings(backend, data, witnesses=listed, witness_policy="2", log_origin=ORIGIN)
    services = open_services(settings, migrate=True)
    try:
        yield World(services, witnesses)
    finally:
        services.close()
        for witness in witnesses:
            witness.kill()
        if backend == "postgres":
            drop_schema(settings.database_schema)


def test_both_witnesses_cosign_and_the_api_serves_the_cosigned_note(world: World) -> None:
    size = world.grow(20)

    cosigned = submit_to_witnesses(world.services)

    assert sorted(cosigned) == ["w1", "w2"]
    with TestClient(create_app(world.services.settings, run_projector=False, services=world.services)) as client:
        body = client.get("/v1/ledger/checkpoint", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert (body["tree_size"], body["witnessed"], body["cosigners"]) == (size, True, ["w1", "w2"])
    verify_checkpoint(body["note"], ORIGIN, world.services.ledger.signer.public_key)
    cosigners = [parse_cosigner_vkey(w.vkey) for w in world.witnesses]
    assert set(valid_cosigners(body["note"], cosigners)) == {"witness.test/w1", "witness.test/w2"}
    assert len(parse_signed_note(body["note"])[1]) == 3


def test_the_projector_pass_submits_new_checkpoints(world: World) -> None:
    append_events(world.services.ledger, 5, batch=5)

    run_once(world.services)  # projects, publishes the first checkpoint and submits it

    with world.services.engine.connect() as conn:
        latest = tlog.latest_checkpoint(conn)
    assert latest is not None
    assert set(world.cosigned_sizes().values()) == {latest.tree_size}


def test_a_witness_down_delays_witnessing_and_a_later_checkpoint_catches_up(world: World) -> None:
    first = world.grow(10)
    submit_to_witnesses(world.services)
    world.witnesses[1].kill()

    second = world.grow(10)
    assert submit_to_witnesses(world.services) == ["w1"]
    policy = witness_policy(world.services.settings)
    assert policy is not None
    with world.services.engine.connect() as conn:
        witnessed = latest_witnessed(conn, policy)
    assert witnessed is not None and witnessed.checkpoint.tree_size == first  # 2 of 2 only there

    third = world.grow(10)
    world.witnesses[1].start()
    deadline = time.monotonic() + 20
    while world.cosigned_sizes()["witness.test/w2"] < third and time.monotonic() < deadline:
        submit_to_witnesses(world.services)  # a failed witness is retried after a short pause
        time.sleep(0.2)

    assert world.cosigned_sizes() == {"witness.test/w1": third, "witness.test/w2": third}
    assert second < third
    with world.services.engine.connect() as conn:
        witnessed = latest_witnessed(conn, policy)
    assert witnessed is not None and witnessed.checkpoint.tree_size == third


def test_a_witness_ahead_of_the_ledgers_record_answers_409_and_the_ledger_resumes_from_its_size(
    world: World,
) -> None:
    world.grow(10)
    submit_to_witnesses(world.services)
    with world.services.writer_engine.begin() as conn:
        conn.execute(tlog.tlog_cosignatures.delete())  # the ledger forgot; the witnesses did not
    latest = world.grow(7)

    assert sorted(submit_to_witnesses(world.services)) == ["w1", "w2"]
    assert set(world.cosigned_sizes().values()) == {latest}


def test_without_a_policy_quorum_the_checkpoint_is_not_witnessed(world: World) -> None:
    world.grow(3)
    world.witnesses[0].kill()
    world.witnesses[1].kill()

    assert submit_to_witnesses(world.services) == []
    with TestClient(create_app(world.services.settings, run_projector=False, services=world.services)) as client:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        latest = client.get("/v1/ledger/checkpoint", headers=headers).json()
        witnessed = client.get("/v1/ledger/checkpoint", params={"witnessed": "true"}, headers=headers)
    assert (latest["witnessed"], latest["cosigners"]) == (False, [])
    assert witnessed.status_code == 404
    assert witnessed.headers["content-type"] == "application/problem+json"


def test_keys_show_prints_the_verifier_key_a_witness_is_configured_with(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    signer, _ = keystore.load_or_create(settings.keys_dir)

    result = run_cli(settings, "keys", "show")

    line = next(x for x in result.stdout.splitlines() if x.startswith("checkpoint verifier key: "))
    name, public_key = parse_verifier_key(line.removeprefix("checkpoint verifier key: "))
    assert (name, raw_public_key(public_key)) == (settings.log_origin, raw_public_key(signer.public_key))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLLEDGER_WITNESSES", "w1=not-a-url=x"),
        ("MLLEDGER_WITNESSES", "w1=http://127.0.0.1:1=example.org+00000000+AAAA"),
        ("MLLEDGER_WITNESS_POLICY", "3"),
        ("MLLEDGER_WITNESS_POLICY", "quorum nobody"),
    ],
)
def test_a_malformed_witness_setting_is_one_line_at_start(tmp_path: Path, variable: str, value: str) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    env = {**settings_env(settings), variable: value}

    result = subprocess.run(
        [sys.executable, "-m", "service", "keys", "show"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("mlledger: error: invalid setting")
    assert len(result.stderr.strip().splitlines()) == 1
