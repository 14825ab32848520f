"""An export bundle carries the keyring's windows and revocations, and ``verify-bundle`` holds
every event to them: a retired key's new event is refused naming the key's window, and a
revoked key's events after its compromise are named, exactly those."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.governance_world import make_world, train_and_register
from support.ledger import make_settings

from domain.integrity.keys import Signer
from domain.model import Model
from service.app import create_app
from service.application.ledger import Ledger
from service.bootstrap import Services, open_services
from service.exports import verify_bundle as checker
from service.exports.bundle import export_bundle
from service.exports.scope import ExportRequest
from service.store import keystore

MODEL = "credit-risk"
ACTOR = "user:admin"


@pytest.fixture
def trained(tmp_path: Path) -> Iterator[Services]:
    """A ledger (SQLite) holding a registered model, all signed by its genesis key."""
    settings = make_settings("sqlite", tmp_path / "data")
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_projector=False, services=services)) as http:
            train_and_register(make_world(http), "alice", MODEL)
        yield services
    finally:
        services.close()


def _rotate(services: Services) -> None:
    new = Signer.generate()
    services.ledger.rotate_key(new, reason="scheduled", actor=ACTOR)
    keystore.replace_current(services.settings.keys_dir, services.settings.key_path, new)


def _bundle(services: Services, tmp_path: Path) -> Path:
    services.runner.catch_up()
    return export_bundle(services, ExportRequest.of(MODEL), actor=ACTOR, destination=tmp_path / "bundle.zip").path


def _lines(bundle: Path) -> list[dict[str, object]]:
    with zipfile.ZipFile(bundle) as archive:
        return [json.loads(line) for line in archive.read(checker.EVENTS).splitlines()]


def test_a_rotated_ledgers_bundle_verifies_with_each_keys_window(trained: Services, tmp_path: Path) -> None:
    genesis = trained.ledger.signer.key_id
    _rotate(trained)
    rotated_at = trained.ledger.position()

    summary = checker.verify_bundle(_bundle(trained, tmp_path), workers=1)

    assert summary.key_windows[genesis][:2] == (1, rotated_at)
    assert summary.key_windows[trained.ledger.signer.key_id][:2] == (rotated_at + 1, None)


def test_a_retired_key_signing_a_model_event_is_refused_naming_the_window(trained: Services, tmp_path: Path) -> None:
    old = trained.ledger.signer
    _rotate(trained)
    rotated_at = trained.ledger.position()
    forger = Ledger(trained.settings, old)
    forger.events.keyring_version = lambda: None  # someone who kept the retired key, without the insert-time check
    model = forger.get(Model.create_id(name=MODEL), Model)
    model.change_policy(model.policy.to_dict(), actor=ACTOR)
    forged = forger.save(model)[-1].notification.id
    forger.close()

    with pytest.raises(checker.BundleProblem) as caught:
        checker.verify_bundle(_bundle(trained, tmp_path), workers=1)

    assert f"(position {forged}, Model " in caught.value.where
    assert caught.value.what == (
        f"signed by ledger key {old.key_id} at position {forged}, outside the key's window "
        f"(positions 1 to {rotated_at})"
    )


def test_a_revoked_keys_events_after_the_position_are_named_exactly(trained: Services, tmp_path: Path) -> None:
    old = trained.ledger.signer.key_id
    since = trained.ledger.position() - 3
    _rotate(trained)
    trained.ledger.revoke_key(old, since, reason="key file leaked", actor=ACTOR)
    bundle = _bundle(trained, tmp_path)
    expected = [
        int(str(line["position"]))
        for line in _lines(bundle)
        if line["key_id"] == old and int(str(line["position"])) > since
    ]

    with pytest.raises(checker.BundleProblem) as caught:
        checker.verify_bundle(bundle, workers=1)

    assert len(expected) >= 2
    assert caught.value.what.startswith(f"{len(expected)} event(s) signed by a revoked ledger key after its compromise")
    named = [int(part.split(",")[0]) for part in caught.value.what.split("(position ")[1:] if part[0].isdigit()]
    assert named == expected
