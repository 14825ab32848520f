"""The ledger application on a real database (SQLite and PostgreSQL): positions,
read-back, hash chains, key rotation, tamper detection on load and projection rebuilds."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from domain.dataset import DatasetVersion
from domain.errors import TamperedEvent
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.ledger_key import LedgerKeyring
from domain.integrity.sealing import ZERO_HASH, SealedEvent
from domain.principal import Principal, possession_message
from projections.transparency_log import tlog_leaves, tlog_nodes
from service.application.ledger import KeyNotInKeyring
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.ops.workload import append_events
from service.store import keystore
from service.store.persistence import events_table, notification_id_column

ACTOR = "user:admin"
DIGEST = "sha256:" + "ab" * 32
Stored = tuple[Any, SealedEvent, dict[str, Any]]


def _register_alice(services: Services) -> str:
    return services.ledger.register_principal("alice", "user", ["data_scientist"], actor=ACTOR).id


def _stored_events(services: Services) -> list[Stored]:
    """Every stored event as (notification, seal, envelope), in ledger order."""
    out = []
    for notification in services.ledger.recorder.select_notifications(1, 1000):
        sealed = SealedEvent.from_record(notification.state)
        out.append((notification, sealed, sealed.envelope_fields()))
    return out


def _events_of(services: Services, aggregate_id: str) -> list[Stored]:
    return [e for e in _stored_events(services) if str(e[0].originator_id) == aggregate_id]


def _set_state(services: Services, aggregate_id: str, version: int, state: bytes) -> None:
    """Overwrite one stored record behind the application's back."""
    table, column = events_table(services.engine), notification_id_column(services.engine)
    (nid,) = [n.id for n, _, _ in _events_of(services, aggregate_id) if n.originator_version == version]
    with services.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET state = :state WHERE {column} = :nid"), {"state": state, "nid": nid})


@contextmanager
def _reopened(services: Services) -> Iterator[Services]:
    """The same ledger as a second process sees it: no caches shared with ``services``."""
    other = open_services(services.settings)
    try:
        yield other
    finally:
        other.close()


def _register_dataset(services: Services) -> Any:
    return services.ledger.register_dataset_version(
        name="credit",
        digest=DIGEST,
        size=2048,
        format="csv",
        schema=[{"name": "age", "type": "int"}],
        row_count=20,
        datasheet={"motivation": "credit scoring", "pii_columns": ["name"]},
        source="s3://bucket/credit.csv",
        actor=ACTOR,
    )


# -- writes and reads ---------------------------------------------------------------


def test_each_write_returns_a_higher_position(services: Services) -> None:
    ledger = services.ledger

    registered = ledger.register_principal("alice", "user", ["data_scientist"], actor=ACTOR)
    granted = ledger.grant_role(registered.id, "approver", actor=ACTOR)
    revoked = ledger.revoke_role(registered.id, "approver", actor=ACTOR)
    dataset = _register_dataset(services)

    positions = [registered.position, granted.position, revoked.position, dataset.position]
    assert positions == sorted(set(positions))
    assert ledger.position() == dataset.position


def test_an_aggregate_reads_back_with_the_state_it_was_written_with(services: Services) -> None:
    signer = Signer.generate()
    pem = public_key_pem(signer.public_key)
    principal_id = _register_alice(services)
    services.ledger.grant_role(principal_id, "approver", actor=ACTOR)
    proof = signer.sign(possession_message(principal_id, signer.key_id))
    services.ledger.register_signing_key(principal_id, pem, proof, actor=principal_id)

    with _reopened(services) as other:
        principal = other.ledger.get(principal_id, Principal)

    assert (principal.name, principal.kind, principal.roles) == ("alice", "user", ["approver", "data_scientist"])
    assert principal.signing_keys == {signer.key_id: pem}
    assert principal.version == 4  # registered, role granted, possession proven, key registered


def test_a_dataset_version_reads_back_with_its_schema_and_datasheet(services: Services) -> None:
    written = _register_dataset(services)

    with _reopened(services) as other:
        dataset = other.ledger.get(written.id, DatasetVersion)

    assert (dataset.name, dataset.digest, dataset.size, dataset.row_count) == ("credit", DIGEST, 2048, 20)
    assert dataset.schema == [{"name": "age", "type": "int"}]
    assert dataset.datasheet == {"motivation": "credit scoring", "pii_columns": ["name"]}


def test_a_stored_payload_holds_exactly_what_the_command_recorded(services: Services) -> None:
    principal_id = _register_alice(services)

    ((_, _, envelope),) = _events_of(services, principal_id)

    assert envelope["type"] == Principal.Registered.TOPIC
    assert envelope["actor"] == ACTOR
    assert envelope["payload"] == {"name": "alice", "kind": "user", "roles": ["data_scientist"]}


# -- hash chains -------------------------------------------------------------------


def test_each_event_links_to_the_hash_of_the_previous_version(services: Services) -> None:
    principal_id = _register_alice(services)
    services.ledger.grant_role(principal_id, "approver", actor=ACTOR)
    services.ledger.grant_role(principal_id, "auditor", actor=ACTOR)
    append_events(services.ledger, 40, batch=10)
    chains: dict[str, list[Stored]] = defaultdict(list)
    for stored in _stored_events(services):
        chains[str(stored[0].originator_id)].append(stored)

    broken = []
    for aggregate_id, events in chains.items():
        events.sort(key=lambda e: e[0].originator_version)
        expected = ZERO_HASH
        for notification, sealed, envelope in events:
            if envelope["prev_hash"] != expected:
                broken.append((aggregate_id, notification.originator_version))
            expected = sealed.hash

    assert len(chains) > 5
    assert broken == []


def test_a_freshly_opened_ledger_chains_to_the_stored_head(services: Services) -> None:
    principal_id = _register_alice(services)

    with _reopened(services) as other:
        other.ledger.grant_role(principal_id, "approver", actor=ACTOR)

    (_, first, _), (_, _, second) = _events_of(services, principal_id)
    assert second["prev_hash"] == first.hash


# -- key rotation ------------------------------------------------------------------


def test_events_after_a_rotation_carry_the_new_key_id_and_earlier_ones_keep_the_old(services: Services) -> None:
    old, new = services.ledger.signer, Signer.generate()
    before = _register_alice(services)

    services.ledger.rotate_key(new, reason="scheduled", actor=ACTOR)
    after = services.ledger.register_principal("bob", "user", [], actor=ACTOR).id

    assert [s.key_id for _, s, _ in _events_of(services, before)] == [old.key_id]
    assert [s.key_id for _, s, _ in _events_of(services, after)] == [new.key_id]


def test_the_rotation_event_is_signed_by_the_key_it_replaces(services: Services) -> None:
    old, new = services.ledger.signer, Signer.generate()

    services.ledger.rotate_key(new, reason="scheduled", actor=ACTOR)

    rotations = [(s, e) for _, s, e in _stored_events(services) if e["type"] == LedgerKeyring.Rotated.TOPIC]
    assert [(s.key_id, e["payload"]["key_id"]) for s, e in rotations] == [(old.key_id, new.key_id)]


def test_a_rotated_ledger_verifies_with_both_keys(services: Services) -> None:
    old, new = services.ledger.signer, Signer.generate()
    _register_alice(services)
    services.ledger.rotate_key(new, reason="scheduled", actor=ACTOR)
    services.ledger.register_principal("bob", "user", [], actor=ACTOR)
    services.runner.catch_up()
    assert publish_checkpoint_if_due(services, force=True) is not None

    report = verify_ledger(services.settings, [], workers=2)

    assert [f.describe() for f in report.findings] == []
    assert report.ok
    assert report.keys == sorted([old.key_id, new.key_id])


def test_opening_with_a_key_the_keyring_never_held_is_refused(services: Services) -> None:
    keystore.write_private(keystore.ledger_key_path(services.settings.keys_dir, None), Signer.generate())

    with pytest.raises(KeyNotInKeyring):
        open_services(services.settings)


def test_opening_with_the_key_a_rotation_retired_is_refused(services: Services) -> None:
    # The key file on disk still holds the genesis key; the keyring has moved on.
    services.ledger.rotate_key(Signer.generate(), reason="scheduled", actor=ACTOR)

    with pytest.raises(KeyNotInKeyring):
        open_services(services.settings)


# -- tampering -------------------------------------------------------------------


def test_loading_an_aggregate_whose_record_was_edited_raises_tampered_event(services: Services) -> None:
    principal_id = _register_alice(services)
    services.ledger.grant_role(principal_id, "approver", actor=ACTOR)
    _, sealed, _ = _events_of(services, principal_id)[1]
    edited = sealed.envelope.replace(b'"approver"', b'"admin___"')
    _set_state(services, principal_id, 2, SealedEvent(edited, sealed.hash, sealed.signature, sealed.key_id).to_record())

    with _reopened(services) as other, pytest.raises(TamperedEvent):
        other.ledger.get(principal_id, Principal)


def test_loading_an_aggregate_whose_record_came_from_another_row_raises_tampered_event(services: Services) -> None:
    alice = _register_alice(services)
    bob = services.ledger.register_principal("bob", "user", ["admin"], actor=ACTOR).id
    _, bobs_seal, _ = _events_of(services, bob)[0]
    _set_state(services, alice, 1, bobs_seal.to_record())

    with _reopened(services) as other, pytest.raises(TamperedEvent):
        other.ledger.get(alice, Principal)


def test_loading_an_aggregate_whose_record_is_not_a_record_raises_tampered_event(services: Services) -> None:
    principal_id = _register_alice(services)
    _set_state(services, principal_id, 1, b"this is not a sealed record")

    with _reopened(services) as other, pytest.raises(TamperedEvent):
        other.ledger.get(principal_id, Principal)


def test_loading_an_aggregate_whose_record_was_edited_and_rehashed_raises_tampered_event(
    services: Services,
) -> None:
    principal_id = _register_alice(services)
    services.ledger.grant_role(principal_id, "approver", actor=ACTOR)
    _, sealed, _ = _events_of(services, principal_id)[1]
    edited = sealed.envelope.replace(b'"approver"', b'"admin"')
    forged = SealedEvent(edited, hashlib.sha256(edited).hexdigest(), sealed.signature, sealed.key_id)
    _set_state(services, principal_id, 2, forged.to_record())

    with _reopened(services) as other, pytest.raises(TamperedEvent):
        other.ledger.get(principal_id, Principal)


# -- projections ---------------------------------------------------------------


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def _tlog_rows(services: Services) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with services.engine.connect() as conn:
        leaves = conn.execute(sa.select(tlog_leaves).order_by(tlog_leaves.c.leaf_index)).all()
        nodes = conn.execute(sa.select(tlog_nodes).order_by(tlog_nodes.c.level, tlog_nodes.c.node_index)).all()
    return _plain(leaves), _plain(nodes)


def test_rebuilding_the_transparency_log_reproduces_it_row_for_row(services: Services) -> None:
    append_events(services.ledger, 300, batch=50)
    services.runner.catch_up()
    original = _tlog_rows(services)

    replayed = services.runner.rebuild("transparency_log")

    assert replayed == len(original[0]) == services.ledger.position()
    assert _tlog_rows(services) == original


def test_has_newer_tells_whether_remembered_versions_are_out_of_date(services: Services) -> None:
    ledger = services.ledger
    alice = uuid.UUID(_register_alice(services))
    bob = uuid.UUID(ledger.register_principal("bob", "user", ["auditor"], actor=ACTOR).id)
    remembered = {alice: ledger.get(alice, Principal).version, bob: ledger.get(bob, Principal).version}

    assert not ledger.has_newer(remembered)
    assert not ledger.has_newer({})
    assert not ledger.has_newer({uuid.uuid4(): 0})  # an aggregate the ledger does not hold
    ledger.grant_role(str(alice), "approver", actor=ACTOR)
    assert ledger.has_newer(remembered)
    assert not ledger.has_newer({bob: remembered[bob]})
    assert ledger.has_newer({bob: remembered[bob] - 1})
    assert not ledger.has_newer({alice: ledger.get(alice, Principal).version, bob: remembered[bob]})


def test_newer_names_the_aggregates_with_events_after_the_versions_given(services: Services) -> None:
    ledger = services.ledger
    alice = uuid.UUID(_register_alice(services))
    bob = uuid.UUID(ledger.register_principal("bob", "user", ["auditor"], actor=ACTOR).id)
    remembered = {alice: ledger.get(alice, Principal).version, bob: ledger.get(bob, Principal).version}

    ledger.grant_role(str(alice), "approver", actor=ACTOR)

    assert ledger.newer(remembered) == {alice}
    assert ledger.newer({**remembered, uuid.uuid4(): 0}) == {alice}  # an aggregate the ledger does not hold
    assert ledger.newer({}) == set()


def test_read_answers_the_current_aggregate_without_copying_it(services: Services) -> None:
    ledger = services.ledger
    alice = _register_alice(services)
    before: Principal = ledger.read(alice, Principal)

    ledger.grant_role(alice, "approver", actor=ACTOR)
    after: Principal = ledger.read(alice, Principal)

    assert after is ledger.read(alice, Principal)
    assert "approver" in after.roles and after.version == before.version + 1
    assert ledger.get(alice, Principal) is not after
