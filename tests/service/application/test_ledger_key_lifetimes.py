"""Ledger key lifetimes on a real database (SQLite and PostgreSQL): each key signs only inside
its window of positions, a revoked key's events after its compromise are named, and a process
that holds a retired key picks up the rotation or refuses to write."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, run_cli

from domain.errors import LedgerKeyRetired, LedgerKeyStillCurrent
from domain.integrity.keys import Signer
from domain.integrity.sealing import ZERO_HASH, SealedEvent
from domain.principal import Principal
from service.app import create_app
from service.application.ledger import Ledger
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.settings import Settings
from service.store import keystore
from service.store.keyring_guard import KEYRING_VERSION, KeyringMoved

ACTOR = "user:admin"


def _principal(services: Services | Ledger, name: str) -> int:
    """Record one event; return its position."""
    ledger = services if isinstance(services, Ledger) else services.ledger
    return ledger.register_principal(name, "user", [], actor=ACTOR).position


def _signed_by(services: Services, key_id: str) -> dict[int, tuple[str, int]]:
    """Position -> (aggregate id, version) of every event ``key_id`` signed."""
    return {
        n.id: (str(n.originator_id), n.originator_version)
        for n in services.ledger.recorder.select_notifications(1, 10_000)
        if SealedEvent.from_record(n.state).key_id == key_id
    }


def _rotate_like_the_cli(services: Services) -> Signer:
    """What ``mlledger keys rotate`` does: record the rotation, then make the new key file current."""
    new = Signer.generate()
    services.ledger.rotate_key(new, reason="scheduled", actor=ACTOR)
    keystore.replace_current(services.settings.keys_dir, services.settings.key_path, new)
    return new


def _verified(services: Services) -> list[str]:
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)
    return [f.describe() for f in verify_ledger(services.settings, [], workers=2).findings]


@pytest.fixture
def other(services: Services) -> Iterator[Services]:
    """A second process's services on the same ledger."""
    opened = open_services(services.settings)
    yield opened
    opened.close()


def test_a_rotated_ledger_verifies_and_reports_each_keys_window(services: Services) -> None:
    genesis = services.ledger.signer.key_id
    _principal(services, "alice")
    new = _rotate_like_the_cli(services)
    rotated_at = services.ledger.position()
    _principal(services, "bob")

    report = verify_ledger(services.settings, [], workers=2)

    assert report.ok, [f.describe() for f in report.findings]
    assert report.windows[genesis].describe() == f"positions 1 to {rotated_at}"
    assert report.windows[new.key_id].describe() == f"positions {rotated_at + 1} onward (current)"


def test_a_retired_key_signing_a_new_event_fails_verify_naming_the_event_and_the_window(
    services: Services,
) -> None:
    old = services.ledger.signer
    _principal(services, "alice")
    _rotate_like_the_cli(services)
    rotated_at = services.ledger.position()
    # Someone who kept the retired key writes with it, without the insert-time check a ledger process makes.
    forger = Ledger(services.settings, old)
    forger.events.keyring_version = lambda: None
    forged = forger.register_principal("mallory", "user", ["admin"], actor=ACTOR)
    forger.close()

    findings = _verified(services)

    assert findings == [
        f"notification {forged.position} (aggregate {forged.id} version 1): signed by ledger key {old.key_id} "
        f"at position {forged.position}, outside the key's window (positions 1 to {rotated_at})"
    ]


def test_revocation_names_exactly_the_events_the_key_signed_after_the_position(services: Services) -> None:
    old = services.ledger.signer
    for name in ("a", "b", "c", "d"):
        _principal(services, name)
    since = services.ledger.position() - 2
    _rotate_like_the_cli(services)
    _principal(services, "e")
    expected = {nid for nid in _signed_by(services, old.key_id) if nid > since}

    services.ledger.revoke_key(old.key_id, since, reason="key file leaked", actor=ACTOR)
    report = verify_ledger(services.settings, [], workers=2)

    assert not report.ok
    assert {f.notification_id for f in report.compromised()} == expected
    assert {f.notification_id for f in report.findings} == expected
    assert all(f"after its compromise at position {since}" in f.what for f in report.findings)


def test_a_revocation_before_any_signature_of_the_key_names_nothing(services: Services) -> None:
    first = services.ledger.signer
    _rotate_like_the_cli(services)
    _principal(services, "alice")

    services.ledger.revoke_key(first.key_id, services.ledger.position(), reason="retired key leaked", actor=ACTOR)

    assert _verified(services) == []


def test_the_current_key_is_not_revoked_before_a_rotation(services: Services) -> None:
    with pytest.raises(LedgerKeyStillCurrent):
        services.ledger.revoke_key(services.ledger.signer.key_id, 0, reason="leaked", actor=ACTOR)


def test_another_process_picks_up_a_rotation_without_a_restart(services: Services, other: Services) -> None:
    new = _rotate_like_the_cli(other)

    written = _principal(services, "alice")

    assert services.ledger.signer.key_id == new.key_id
    assert _signed_by(services, new.key_id).keys() >= {written}
    assert _verified(services) == []


def test_a_process_without_the_new_key_refuses_to_write_with_the_retired_one(
    services: Services, other: Services
) -> None:
    old = services.ledger.signer.key_id
    other.ledger.rotate_key(Signer.generate(), reason="moved to a key this host never sees", actor=ACTOR)
    before = services.ledger.position()

    with pytest.raises(LedgerKeyRetired, match=f"holds ledger key {old}, which a rotation retired"):
        _principal(services, "alice")

    assert services.ledger.position() == before
    assert _verified(services) == []


def test_cli_revoke_then_verify_names_the_events(settings: Settings, services: Services) -> None:
    old = services.ledger.signer.key_id
    since = _principal(services, "alice")
    last = _principal(services, "bob")
    _rotate_like_the_cli(services)
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)

    revoked = run_cli(settings, "keys", "revoke", old, "--compromised-since", str(since))
    verified = run_cli(settings, "verify", "--workers", "2")

    assert revoked.returncode == 0, revoked.stderr
    assert verified.returncode == 1
    named = [line for line in verified.stdout.splitlines() if line.startswith("  notification ")]
    assert [int(line.split()[1]) for line in named] == list(range(since + 1, last + 2))
    assert f"after its compromise at position {since}" in verified.stdout


def test_cli_revoke_of_an_unknown_key_is_one_line(settings: Settings, services: Services) -> None:
    result = run_cli(settings, "keys", "revoke", "0123456789abcdef", "--compromised-since", "3")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "not a key of this ledger" in result.stderr


def test_over_http_a_write_with_a_retired_key_is_a_503_problem(services: Services, other: Services) -> None:
    other.ledger.rotate_key(Signer.generate(), reason="moved to a key this host never sees", actor=ACTOR)

    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        response = http.post(
            "/v1/principals",
            json={"name": "alice", "kind": "user", "roles": []},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Ledger key retired"


def test_an_insert_signed_before_a_rotation_landed_is_refused_whole(services: Services, other: Services) -> None:
    # The batch was signed while the keyring stood where this process last saw it;
    # a rotation by another process lands before the insert takes the write lock.
    stale = services.ledger._keyring_version
    principal = Principal(name="alice", kind="user", roles=[], actor=ACTOR)
    envelope, digest = services.ledger.mapper.encode_event(principal.pending_events[0], ZERO_HASH)
    signer = services.ledger.signer
    stored = services.ledger.mapper.stored(
        principal.pending_events[0], envelope, digest, signer.sign(digest), signer.key_id
    )
    other.ledger.rotate_key(Signer.generate(), reason="scheduled", actor=ACTOR)
    before = services.ledger.position()

    with pytest.raises(KeyringMoved):
        services.ledger.recorder.insert_events([stored], **{KEYRING_VERSION: stale})

    assert services.ledger.position() == before


def test_a_revocation_by_another_process_does_not_stop_this_ones_writes(services: Services, other: Services) -> None:
    first = services.ledger.signer.key_id
    _rotate_like_the_cli(services)
    other.ledger.revoke_key(first, 0, reason="old key leaked", actor=ACTOR)
    current = services.ledger.signer.key_id

    written = _principal(services, "alice")

    assert written in _signed_by(services, current)
