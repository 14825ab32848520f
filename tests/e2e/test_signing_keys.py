"""Approvers' signing keys over HTTP: registered by their owner only, with proof
of possession; revoked keys sign nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, approve, make_world, train_and_register

from domain.integrity.keys import Signer, public_key_pem
from domain.principal import possession_message
from mlledger.client import LedgerClientError
from service.app import create_app
from service.bootstrap import Services


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        yield make_world(http)


def _register(world: World, as_whom: str, for_whom: str, signer: Signer, proof: str) -> None:
    client = world.admin if as_whom == "admin" else world.people[as_whom].client
    client.request(
        "POST",
        f"/v1/principals/{world.people[for_whom].id}/signing-keys",
        json={"public_key_pem": public_key_pem(signer.public_key), "proof": proof},
    )


def test_an_admin_cannot_register_a_signing_key_for_someone_else(world: World) -> None:
    bob = world.people["bob"]
    held_by_admin = Signer.generate()
    proof = held_by_admin.sign(possession_message(bob.id, held_by_admin.key_id))  # a perfect proof, wrong caller

    with pytest.raises(LedgerClientError) as caught:
        _register(world, "admin", "bob", held_by_admin, proof)

    assert caught.value.status == 403
    assert caught.value.problem["type"].endswith("/signing-key-not-own")
    assert held_by_admin.key_id not in world.admin.request("GET", f"/v1/principals/{bob.id}")["signing_keys"]


@pytest.mark.parametrize("made", ["by another key", "for another principal", "garbled"])
def test_a_signing_key_registered_without_proof_of_possession_is_refused(world: World, made: str) -> None:
    bob, carol = world.people["bob"], world.people["carol"]
    signer, other = Signer.generate(), Signer.generate()
    proof = {
        "by another key": other.sign(possession_message(bob.id, signer.key_id)),
        "for another principal": signer.sign(possession_message(carol.id, signer.key_id)),
        "garbled": "bm90IGEgc2lnbmF0dXJl",
    }[made]

    with pytest.raises(LedgerClientError) as caught:
        _register(world, "bob", "bob", signer, proof)

    assert caught.value.status == 422
    assert caught.value.field == "proof"
    assert caught.value.problem["type"].endswith("/possession-not-proven")
    assert signer.key_id not in bob.client.me()["signing_keys"]


def test_a_signing_key_without_any_proof_is_refused_as_a_bad_request(world: World) -> None:
    bob = world.people["bob"]

    with pytest.raises(LedgerClientError) as caught:
        bob.client.request(
            "POST",
            f"/v1/principals/{bob.id}/signing-keys",
            json={"public_key_pem": public_key_pem(Signer.generate().public_key)},
        )

    assert caught.value.status == 422


def test_a_statement_signed_with_a_revoked_key_is_refused_and_earlier_approvals_stand(
    world: World, services: Services
) -> None:
    first = train_and_register(world, "alice", "credit-risk", seed=1)
    second = train_and_register(world, "alice", "credit-risk", seed=2)
    bob = world.people["bob"]
    assert bob.signer is not None and bob.key_id is not None
    approve(world, "bob", "credit-risk", first)

    world.admin.revoke_signing_key(bob.id, bob.key_id, "laptop stolen")

    with pytest.raises(LedgerClientError) as caught:
        bob.client.decide("credit-risk", second, bob.signer, bob.key_id, "approve", "with a stolen key")
    assert caught.value.status == 422
    assert caught.value.problem["type"].endswith("/revoked-signing-key")
    assert caught.value.field == "key_id"
    assert world.admin.model_version("credit-risk", second)["approvers"] == []
    assert world.admin.model_version("credit-risk", first)["approvers"] == [bob.id]
    assert bob.client.me()["revoked_signing_keys"] == [bob.key_id]
    fresh = Signer.generate()
    fresh_id = bob.client.register_signing_key(bob.id, fresh)
    bob.client.decide("credit-risk", second, fresh, fresh_id, "approve", "with a new key")
    services.runner.catch_up()
    kinds = [e["event_type"] for e in world.admin.audit_events(aggregate_id=bob.id)["events"]]
    assert kinds.count("SigningKeyPossessionProven") == 2 and "SigningKeyRevoked" in kinds


def test_only_the_owner_or_an_admin_revokes_a_signing_key(world: World) -> None:
    bob, carol = world.people["bob"], world.people["carol"]
    assert bob.key_id is not None

    with pytest.raises(LedgerClientError) as caught:
        carol.client.revoke_signing_key(bob.id, bob.key_id, "not mine to revoke")

    assert caught.value.status == 403
    bob.client.revoke_signing_key(bob.id, bob.key_id, "rotating")
    with pytest.raises(LedgerClientError) as again:
        bob.client.revoke_signing_key(bob.id, bob.key_id, "twice")
    assert again.value.status == 409
