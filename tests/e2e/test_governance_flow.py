"""The governance workflow over HTTP: separation of duties, signed approvals,
deployment gates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, approve, make_world, train_and_register

from domain.integrity.keys import Signer
from mlledger.client import LedgerClientError
from service.app import create_app
from service.bootstrap import Services


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        yield make_world(http)


def test_submitter_approving_is_refused_naming_the_rule(world: World) -> None:
    version = train_and_register(world, "dave", "credit-risk")

    with pytest.raises(LedgerClientError) as caught:
        approve(world, "dave", "credit-risk", version)

    assert caught.value.status == 403
    assert "separation of duties" in caught.value.problem["detail"]
    assert caught.value.problem["title"] == "Separation of duties violated"


def test_a_signature_by_another_key_is_refused(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    bob = world.people["bob"]
    assert bob.key_id is not None

    with pytest.raises(LedgerClientError) as caught:
        bob.client.decide("credit-risk", version, Signer.generate(), bob.key_id, "approve", "looks fine")

    assert caught.value.status == 422
    assert caught.value.field == "signature"


def test_a_missing_signature_is_refused(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    bob = world.people["bob"]
    found = bob.client.model_version("credit-risk", version)

    with pytest.raises(LedgerClientError) as caught:
        bob.client.request(
            "POST",
            f"/v1/models/credit-risk/versions/{version}/approvals",
            json={"key_id": bob.key_id, "statement": {"model_version_id": found["id"]}},
        )

    assert caught.value.status == 422
    assert caught.value.field == "signature"


def test_deploying_an_unapproved_version_is_refused(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    approve(world, "bob", "credit-risk", version)

    with pytest.raises(LedgerClientError) as caught:
        world.people["olivia"].client.deploy("credit-risk", "champion", version)

    assert caught.value.status == 409
    assert "1 of 2 required approvals" in caught.value.problem["detail"]


def test_deploying_a_rejected_version_is_refused(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    approve(world, "bob", "credit-risk", version)
    approve(world, "carol", "credit-risk", version, decision="reject")

    with pytest.raises(LedgerClientError) as caught:
        world.people["olivia"].client.deploy("credit-risk", "champion", version)

    assert caught.value.status == 409
    assert "rejected" in caught.value.problem["detail"]


def test_two_distinct_approvals_let_an_operator_deploy(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    approve(world, "bob", "credit-risk", version)
    approve(world, "carol", "credit-risk", version)

    written = world.people["olivia"].client.deploy("credit-risk", "champion", version, reason="go live")

    assert written.position > 0
    assert world.people["olivia"].client.deployment("credit-risk")["champion"] == version


def test_the_same_approver_cannot_count_twice(world: World) -> None:
    version = train_and_register(world, "alice", "credit-risk")
    approve(world, "bob", "credit-risk", version)

    with pytest.raises(LedgerClientError) as caught:
        approve(world, "bob", "credit-risk", version)

    assert caught.value.status == 409


def test_an_approval_statement_for_another_version_is_refused(world: World) -> None:
    first = train_and_register(world, "alice", "credit-risk", seed=1)
    second = train_and_register(world, "alice", "credit-risk", seed=2)
    bob = world.people["bob"]
    assert bob.signer is not None
    statement = bob.client.request(
        "GET",
        f"/v1/models/credit-risk/versions/{first}/approval-statement",
        params={"decision": "approve", "reason": "fine"},
    )

    with pytest.raises(LedgerClientError) as caught:
        bob.client.request(
            "POST",
            f"/v1/models/credit-risk/versions/{second}/approvals",
            json={"key_id": bob.key_id, "statement": statement, "signature": bob.signer.sign(b"x")},
        )

    assert caught.value.status == 422
    assert caught.value.field is not None and caught.value.field.startswith("statement.")


def test_a_code_version_names_an_uploaded_archive(world: World) -> None:
    alice = world.people["alice"].client
    digest = alice.upload_code_archive(b"PK\x03\x04 pretend zip")

    written = alice.register_code_version("https://git.example/x", "abcdef1", archive_digest=digest)

    assert alice.request("GET", f"/v1/code-versions/{written.id}")["archive_digest"] == digest


def test_a_code_version_naming_a_missing_archive_is_refused(world: World) -> None:
    alice = world.people["alice"].client

    with pytest.raises(LedgerClientError) as caught:
        alice.register_code_version("https://git.example/x", "abcdef1", archive_digest="sha256:" + "1" * 64)

    assert caught.value.status == 422
    assert caught.value.field == "archive_digest"
