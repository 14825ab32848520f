"""``verify --since-checkpoint`` on SQLite and PostgreSQL: it passes on an honest ledger, checks only the
events after the verified checkpoint, and catches an edited event after it, a rewritten checkpoint, a
swapped event before it, and an edited state file."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import sqlalchemy as sa
from support.ledger import run_cli

from domain.integrity.checkpoint import Checkpoint, sign_checkpoint
from domain.integrity.keys import raw_public_key
from domain.integrity.sealing import SealedEvent, record_bytes
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verified_state import VerifiedState, load_state, state_path
from service.ops.verify import Report, verify_ledger
from service.ops.verify_since import verify_since_checkpoint
from service.ops.workload import append_events
from service.store.persistence import events_table, notification_id_column

ACTOR = "user:admin"


def _record_and_checkpoint(services: Services, count: int) -> None:
    append_events(services.ledger, count, batch=50)
    services.runner.catch_up()
    assert publish_checkpoint_if_due(services, force=True) is not None


@pytest.fixture
def verified(services: Services) -> VerifiedState:
    """A ledger verified in full at a checkpoint, then grown by 120 events and checkpointed again."""
    _record_and_checkpoint(services, 200)
    report = verify_ledger(services.settings, [raw_public_key(services.signer.public_key)])
    assert report.ok and report.state is not None
    _record_and_checkpoint(services, 120)
    return report.state


def _since(services: Services, state: VerifiedState) -> Report:
    return verify_since_checkpoint(services.settings, state, [raw_public_key(services.signer.public_key)])


def _what(report: Report) -> str:
    first = report.first()
    assert first is not None
    return first.describe()


def _edit_record(services: Services, position: int) -> None:
    table, column = events_table(services.engine), notification_id_column(services.engine)
    with services.engine.begin() as conn:
        record = conn.execute(sa.text(f"SELECT state FROM {table} WHERE {column} = :n"), {"n": position}).scalar_one()
        edited = bytes(record).replace(b'"actor":"', b'"actor":"x', 1)
        conn.execute(sa.text(f"UPDATE {table} SET state = :s WHERE {column} = :n"), {"s": edited, "n": position})


def test_only_the_events_after_the_verified_checkpoint_are_verified(
    services: Services, verified: VerifiedState
) -> None:
    report = _since(services, verified)

    assert report.ok, _what(report)
    assert (report.since, report.events) == (verified.tree_size, services.ledger.position() - verified.tree_size)
    assert report.state is not None and report.state.tree_size == services.ledger.position()
    assert _since(services, report.state).events == 0  # from the new state on, nothing is left to verify


def test_an_event_edited_after_the_checkpoint_is_found(services: Services, verified: VerifiedState) -> None:
    position = verified.last_notification_id + 7
    _edit_record(services, position)

    report = _since(services, verified)

    assert not report.ok
    assert _what(report).startswith(f"notification {position} ")
    assert "stored hash does not match" in _what(report)


def test_a_rewritten_checkpoint_is_found(services: Services, verified: VerifiedState) -> None:
    forged_root = hashlib.sha256(b"another history").digest()
    origin = services.settings.log_origin
    note = sign_checkpoint(Checkpoint(origin, verified.tree_size, forged_root), origin, services.signer.note_key)
    with services.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tlog_checkpoints SET note = :note, root_hash = :root WHERE tree_size = :size"),
            {"note": note, "root": forged_root, "size": verified.tree_size},
        )

    report = _since(services, verified)

    assert not report.ok
    assert "is not the one verified before" in _what(report)


def _reseal(services: Services, position: int, old: bytes, new: bytes) -> str:
    """Replace ``old`` by ``new`` in the event's envelope and seal it again with the ledger key; its new hash."""
    table, column = events_table(services.engine), notification_id_column(services.engine)
    with services.engine.begin() as conn:
        record = conn.execute(sa.text(f"SELECT state FROM {table} WHERE {column} = :n"), {"n": position}).scalar_one()
        envelope = SealedEvent.from_record(bytes(record)).envelope.replace(old, new, 1)
        digest = hashlib.sha256(envelope).digest()
        signer = services.signer
        resealed = record_bytes(envelope, digest.hex(), signer.sign(digest), signer.key_id)
        conn.execute(sa.text(f"UPDATE {table} SET state = :s WHERE {column} = :n"), {"s": resealed, "n": position})
    return digest.hex()


def test_history_before_the_checkpoint_rewritten_and_resigned_with_the_ledger_key_is_found(
    services: Services, verified: VerifiedState
) -> None:
    anchors = [raw_public_key(services.signer.public_key)]
    carol = services.ledger.register_principal("carol", "user", ["auditor"], actor=ACTOR)
    _record_and_checkpoint(services, 10)
    state = verify_ledger(services.settings, anchors).state
    assert state is not None and state.last_notification_id >= carol.position
    granted = services.ledger.grant_role(carol.id, "operator", actor=ACTOR)  # follows the registration
    old_hash = SealedEvent.from_record(_record(services, carol.position)).hash
    # Someone holding the ledger key rewrites the registration and re-chains the grant to it.
    new_hash = _reseal(services, carol.position, b'"roles":["auditor"]', b'"roles":["admin"]')
    _reseal(services, granted.position, old_hash.encode(), new_hash.encode())
    _record_and_checkpoint(services, 10)

    report = _since(services, state)

    assert not report.ok
    assert any("not the event the verified checkpoint" in f.what for f in report.findings), _what(report)
    assert not verify_ledger(services.settings, anchors).ok  # the full run sees it too


def _record(services: Services, position: int) -> bytes:
    table, column = events_table(services.engine), notification_id_column(services.engine)
    with services.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT state FROM {table} WHERE {column} = :n"), {"n": position}).scalar_one()
    return bytes(found)


def test_an_edited_state_is_refused(services: Services, verified: VerifiedState) -> None:
    edited = dataclasses.replace(verified, root=hashlib.sha256(b"x").digest())

    report = _since(services, edited)

    assert not report.ok
    assert "verified state was edited" in _what(report)


def test_the_command_line_keeps_the_state_and_verifies_from_it(services: Services) -> None:
    _record_and_checkpoint(services, 60)
    full = run_cli(services.settings, "verify")
    assert full.returncode == 0, full.stdout + full.stderr
    kept = load_state(state_path(services.settings.data_dir))
    _record_and_checkpoint(services, 40)

    since = run_cli(services.settings, "verify", "--since-checkpoint")

    assert since.returncode == 0, since.stdout + since.stderr
    assert f"checkpoint at tree size {kept.tree_size} verified before" in since.stdout
    assert load_state(state_path(services.settings.data_dir)).tree_size == services.ledger.position()
    assert (state_path(services.settings.data_dir).stat().st_mode & 0o777) == 0o600
