"""Every kind of direct database edit is caught by ``mlledger verify``.

A ledger of 1,000+ events is written through the application, projected into the
transparency log and covered by a signed checkpoint; then one edit is made
behind the application's back and the real CLI, in a subprocess, must exit 1 and
name what was touched.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.ledger import drop_schema, make_settings, require_postgres, run_cli

from domain.integrity.keys import Signer
from domain.integrity.sealing import SealedEvent, build_envelope, format_timestamp
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.workload import append_events
from service.store.persistence import events_table, notification_id_column

EVENTS = 1_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    if request.param == "postgres":
        require_postgres()
    settings = make_settings(request.param, tmp_path / "data")
    services = open_services(settings, migrate=True)
    append_events(services.ledger, EVENTS, batch=100)
    services.runner.catch_up()
    assert publish_checkpoint_if_due(services, force=True) is not None
    yield services
    services.close()
    if request.param == "postgres":
        drop_schema(settings.database_schema)


def _rows(services: Services) -> list[sa.Row]:
    column = notification_id_column(services.engine)
    with services.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    f"SELECT {column} AS nid, originator_id, originator_version, topic, state "
                    f"FROM {events_table(services.engine)} ORDER BY {column}"
                )
            )
        )


def _aggregate_with_versions(services: Services, at_least: int) -> list[sa.Row]:
    by_aggregate: dict[str, list[sa.Row]] = {}
    for row in _rows(services):
        by_aggregate.setdefault(str(row.originator_id), []).append(row)
    chain = next(rows for rows in by_aggregate.values() if len(rows) >= at_least)
    return sorted(chain, key=lambda r: r.originator_version)


def _execute(services: Services, sql: str, **params: object) -> None:
    with services.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _set_state(services: Services, nid: int, state: bytes) -> None:
    column = notification_id_column(services.engine)
    table = events_table(services.engine)
    _execute(services, f"UPDATE {table} SET state = :state WHERE {column} = :nid", state=state, nid=nid)


def _aggregate_id(row: sa.Row) -> str:
    return str(uuid.UUID(str(row.originator_id)))


def _edit_envelope(services: Services, row: sa.Row, edit: Callable[[bytes], bytes]) -> None:
    sealed = SealedEvent.from_record(bytes(row.state))
    edited = SealedEvent(edit(sealed.envelope), sealed.hash, sealed.signature, sealed.key_id)
    _set_state(services, row.nid, edited.to_record())


def payload_byte_changed(services: Services) -> str:
    row = _rows(services)[500]

    def flip(envelope: bytes) -> bytes:
        at = envelope.index(b'"payload":') + 15
        return envelope[:at] + bytes([envelope[at] ^ 0x01]) + envelope[at + 1 :]

    _edit_envelope(services, row, flip)
    return _aggregate_id(row)


def signature_from_other_key(services: Services) -> str:
    row = _rows(services)[400]
    sealed = SealedEvent.from_record(bytes(row.state))
    other = Signer.generate()
    forged = SealedEvent(sealed.envelope, sealed.hash, other.sign(bytes.fromhex(sealed.hash)), sealed.key_id)
    _set_state(services, row.nid, forged.to_record())
    return _aggregate_id(row)


def middle_event_deleted(services: Services) -> str:
    chain = _aggregate_with_versions(services, 5)
    column = notification_id_column(services.engine)
    _execute(services, f"DELETE FROM {events_table(services.engine)} WHERE {column} = :nid", nid=chain[2].nid)
    return _aggregate_id(chain[2])


def last_ten_deleted(services: Services) -> str:
    rows = _rows(services)
    column = notification_id_column(services.engine)
    _execute(services, f"DELETE FROM {events_table(services.engine)} WHERE {column} >= :nid", nid=rows[-10].nid)
    return _aggregate_id(rows[-10])


def versions_swapped(services: Services) -> str:
    chain = _aggregate_with_versions(services, 4)
    column = notification_id_column(services.engine)
    a, b = chain[1], chain[2]
    sql = f"UPDATE {events_table(services.engine)} SET originator_version = :v WHERE {column} = :nid"
    _execute(services, sql, v=-1, nid=a.nid)
    _execute(services, sql, v=a.originator_version, nid=b.nid)
    _execute(services, sql, v=b.originator_version, nid=a.nid)
    return _aggregate_id(a)


def forged_event_inserted(services: Services) -> str:
    intruder = Signer.generate()
    aggregate_id = uuid.uuid4()
    envelope = build_envelope(
        aggregate_id=str(aggregate_id),
        aggregate_type="Principal",
        version=1,
        event_type="mlledger.principal.Registered.v1",
        recorded_at=format_timestamp(datetime.now(UTC)),
        actor="user:mallory",
        payload={"name": "mallory", "kind": "user", "roles": ["admin"]},
        prev_hash="0" * 64,
    )
    encoded = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(encoded)
    sealed = SealedEvent(encoded, digest.hexdigest(), intruder.sign(digest.digest()), intruder.key_id)
    oid = aggregate_id.hex if services.engine.dialect.name == "sqlite" else str(aggregate_id)
    _execute(
        services,
        f"INSERT INTO {events_table(services.engine)} (originator_id, originator_version, topic, state) "
        "VALUES (:oid, 1, :topic, :state)",
        oid=oid,
        topic="mlledger.principal.Registered.v1",
        state=sealed.to_record(),
    )
    return str(aggregate_id)


def checkpoint_root_changed(services: Services) -> str:
    _execute(services, "UPDATE tlog_checkpoints SET root_hash = :root", root=hashlib.sha256(b"x").digest())
    return "checkpoint at tree size"


def merkle_node_changed(services: Services) -> str:
    _execute(
        services,
        "UPDATE tlog_nodes SET hash = :h WHERE level = 2 AND node_index = 7",
        h=hashlib.sha256(b"y").digest(),
    )
    return "transparency log node (level 2, index 7)"


def recorded_at_changed(services: Services) -> str:
    row = _rows(services)[300]
    _edit_envelope(services, row, lambda e: e.replace(b'"recorded_at":"20', b'"recorded_at":"19', 1))
    return _aggregate_id(row)


def actor_changed(services: Services) -> str:
    row = _rows(services)[301]
    _edit_envelope(services, row, lambda e: e.replace(b'"actor":"user:workload"', b'"actor":"user:someone"', 1))
    return _aggregate_id(row)


def topic_changed(services: Services) -> str:
    row = next(r for r in _rows(services) if r.topic == "mlledger.principal.RoleGranted.v1")
    column = notification_id_column(services.engine)
    _execute(
        services,
        f"UPDATE {events_table(services.engine)} SET topic = :t WHERE {column} = :nid",
        t="mlledger.principal.RoleRevoked.v1",
        nid=row.nid,
    )
    return _aggregate_id(row)


TAMPERS = {
    "a-payload-byte": payload_byte_changed,
    "b-signature-other-key": signature_from_other_key,
    "c-middle-event-deleted": middle_event_deleted,
    "d-last-ten-deleted": last_ten_deleted,
    "e-versions-swapped": versions_swapped,
    "f-forged-event-inserted": forged_event_inserted,
    "g-checkpoint-root": checkpoint_root_changed,
    "h-merkle-node": merkle_node_changed,
    "i-recorded-at": recorded_at_changed,
    "i-actor": actor_changed,
    "j-topic": topic_changed,
}


def test_untouched_ledger_verifies(ledger: Services) -> None:
    result = run_cli(ledger.settings, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: {len(_rows(ledger))} events" in result.stdout
    assert "latest checkpoint:" in result.stdout


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_direct_edit_is_detected_and_named(ledger: Services, tamper: str) -> None:
    named = TAMPERS[tamper](ledger)

    result = run_cli(ledger.settings, "verify")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("FAILED: ")
    assert named in result.stdout, result.stdout


def test_signature_by_unknown_key_is_named_as_such(ledger: Services) -> None:
    forged_event_inserted(ledger)
    result = run_cli(ledger.settings, "verify")
    assert "which is not a ledger key" in result.stdout
