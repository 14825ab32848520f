"""Nobody alone brings a version to deployment, an admin included.

One admin, with nobody's help, tries every path an admin has: create
principals, issue API keys, register signing keys, grant roles, change the
policy, approve and deploy. Each privileged step only proposes a change that a
different admin must confirm, so none of them, alone, deploys the version. The
bootstrap (a fresh ledger's only admin acting alone) closes at the first grant
of admin or approver. Granting runner (whose key vouches for how a model was
trained) needs a second admin too, except in the bootstrap, which it leaves open.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, approve, make_world, train_and_register
from support.ledger import ADMIN_KEY

from domain.integrity.keys import Signer, public_key_pem
from domain.principal import possession_message
from mlledger.client import ChangePending, LedgerClient, LedgerClientError
from service.app import create_app
from service.bootstrap import Services

MODEL = "credit-risk"


@pytest.fixture
def http(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as client:
        yield client


@pytest.fixture
def world(http: TestClient) -> World:
    return make_world(http)


def _problem(call: object) -> LedgerClientError:
    assert callable(call)
    with pytest.raises(LedgerClientError) as caught:
        call()
    return caught.value


def _pending(call: object) -> str:
    assert callable(call)
    with pytest.raises(ChangePending) as caught:
        call()
    return caught.value.change_id


def test_a_single_admin_alone_cannot_deploy_a_version_by_any_path(world: World, services: Services) -> None:
    number = train_and_register(world, "alice", MODEL)
    admin = world.admin
    me = admin.me()["id"]
    bob = world.people["bob"]
    proposals: list[str] = []

    # create principals: one born an approver is refused; a plain one is created, but stays powerless
    refused = _problem(lambda: admin.create_principal("mallory", ["approver"]))
    assert refused.status == 409 and refused.problem["type"].endswith("/confirmation-required")
    mallory = admin.create_principal("mallory", []).id
    # grant roles: approver for the puppet, approver for oneself, admin for a puppet: proposals only
    proposals.append(_pending(lambda: admin.grant_role(mallory, "approver")))
    proposals.append(_pending(lambda: admin.grant_role(me, "approver")))
    proposals.append(_pending(lambda: admin.grant_role(mallory, "admin")))
    # runner for oneself (to sign execution statements and make a run look trained): a proposal too
    proposals.append(_pending(lambda: admin.grant_role(me, "runner")))
    refused_runner = _problem(lambda: admin.create_principal("fake-runner", ["runner"], kind="service"))
    assert refused_runner.status == 409 and refused_runner.problem["type"].endswith("/confirmation-required")
    # issue keys for someone else (the puppet, or an existing approver): proposals, and no key
    proposals.append(_pending(lambda: admin.issue_api_key(mallory, "mallory's key")))
    proposals.append(_pending(lambda: admin.issue_api_key(bob.id, "a spare key of bob's")))
    # change the policy: weaker is a proposal; so is a weaker policy slipped into a registration
    proposals.append(
        _pending(lambda: admin.set_policy(MODEL, {"required_approvals": 1, "separation_of_duties": False}))
    )
    # confirm one's own proposals: refused, every one of them
    for change_id in proposals:
        own = _problem(lambda change_id=change_id: admin.confirm_change(change_id))  # type: ignore[misc]
        assert own.status == 403 and own.problem["type"].endswith("/proposer-cannot-confirm")
        assert admin.privileged_change(change_id)["status"] == "pending"
    # register signing keys: for the approver bob (with a key the admin holds, and a valid proof), refused
    held = Signer.generate()
    for_bob = _problem(
        lambda: admin.request(
            "POST",
            f"/v1/principals/{bob.id}/signing-keys",
            json={
                "public_key_pem": public_key_pem(held.public_key),
                "proof": held.sign(possession_message(bob.id, held.key_id)),
            },
        )
    )
    assert for_bob.status == 403
    # ... its own key is fine, but an admin is no approver: it cannot approve
    own_key = admin.register_signing_key(me, held)
    approval = _problem(lambda: admin.decide(MODEL, number, held, own_key, "approve", "trust me"))
    assert approval.status == 403
    # deploy: the version has none of its two approvals
    deploy = _problem(lambda: admin.deploy(MODEL, "champion", number, reason="alone"))
    assert deploy.status == 409 and deploy.problem["type"].endswith("/approval-required")

    assert "approver" not in admin.me()["roles"] and "runner" not in admin.me()["roles"]
    puppet = admin.request("GET", f"/v1/principals/{mallory}")
    assert puppet["roles"] == [] and puppet["signing_keys"] == []
    assert bob.key_id is not None and admin.request("GET", f"/v1/principals/{bob.id}")["signing_keys"] == [bob.key_id]
    version = admin.model_version(MODEL, number)
    assert version["approvers"] == [] and version["state"] == "pending"
    assert services.ledger.model(MODEL).policy.required_approvals == 2
    services.runner.catch_up()
    proposed = admin.audit_events(type="mlledger.privilegedchange.Proposed.v1", actor=me, limit=500)["events"]
    assert set(proposals) <= {e["aggregate_id"] for e in proposed}  # every attempt is on the audit trail


def test_a_second_admin_confirms_a_proposal_and_it_takes_effect_then(world: World, services: Services) -> None:
    number = train_and_register(world, "alice", MODEL)
    assert world.second is not None
    erin = world.admin.create_principal("erin", []).id
    grant = _pending(lambda: world.admin.grant_role(erin, "approver"))
    key = _pending(lambda: world.admin.issue_api_key(erin, "erin's laptop"))

    world.second.confirm_change(grant)
    issued = world.second.confirm_change(key)

    erin_client = LedgerClient(api_key=issued["api_key"], http=world.http)
    assert erin_client.me()["roles"] == ["approver"]
    signer = Signer.generate()
    key_id = erin_client.register_signing_key(erin, signer)
    erin_client.decide(MODEL, number, signer, key_id, "approve", "validated")
    approve(world, "bob", MODEL, number)
    world.people["olivia"].client.deploy(MODEL, "champion", number, reason="two approvals, two admins")
    assert world.admin.privileged_change(grant)["confirmer"] == world.second.me()["id"]
    services.runner.catch_up()
    kinds = {e["event_type"] for e in world.admin.audit_events(aggregate_id=grant)["events"]}
    assert kinds == {"Proposed", "Confirmed"}


def test_a_withdrawn_proposal_can_no_longer_be_confirmed(world: World) -> None:
    assert world.second is not None
    erin = world.admin.create_principal("erin", []).id
    grant = _pending(lambda: world.admin.grant_role(erin, "admin"))

    world.admin.withdraw_change(grant, "asked the wrong person")

    late = _problem(lambda: world.second.confirm_change(grant))  # type: ignore[union-attr]
    assert late.status == 409
    assert world.admin.request("GET", f"/v1/principals/{erin}")["roles"] == []


def test_a_stricter_policy_applies_at_once_and_a_weaker_one_waits_for_a_second_admin(
    world: World, services: Services
) -> None:
    train_and_register(world, "alice", MODEL)  # registered with min_impact_ratio null
    assert world.second is not None

    world.admin.set_policy(MODEL, {"required_approvals": 3, "min_impact_ratio": None})
    weaker = _pending(lambda: world.admin.set_policy(MODEL, {"required_approvals": 1, "min_impact_ratio": None}))
    assert services.ledger.model(MODEL).policy.required_approvals == 3
    world.second.confirm_change(weaker)

    assert services.ledger.model(MODEL).policy.required_approvals == 1


def test_a_registration_cannot_slip_in_a_weaker_policy(world: World, services: Services) -> None:
    train_and_register(world, "alice", MODEL)

    refused = _problem(lambda: train_and_register_with(world, {"required_approvals": 1, "min_impact_ratio": None}))

    assert refused.status == 409 and refused.field == "policy"
    assert services.ledger.model(MODEL).policy.required_approvals == 2


def train_and_register_with(world: World, policy: dict[str, object]) -> None:
    client = world.people["alice"].client
    run = client.start_run(name="again", dataset_version_ids=[], seed=1)
    client.upload_artifact(run.id, "model.pkl", b"another model")
    client.finish_run(run.id)
    client.register_model_version(MODEL, run.id, "model.pkl", policy=policy)


def test_the_bootstrap_admin_acts_alone_only_until_the_first_approver_or_second_admin(
    http: TestClient, services: Services
) -> None:
    admin = LedgerClient(api_key=ADMIN_KEY, http=http)
    first = admin.create_principal("first-approver", []).id
    admin.issue_api_key(first, "given in person")  # alone: the bootstrap is open
    runner = admin.create_principal("runner-1", ["runner"], kind="service").id  # alone, and it stays open
    assert admin.request("GET", f"/v1/principals/{runner}")["roles"] == ["runner"]

    admin.grant_role(first, "approver")  # alone, and this closes the bootstrap

    second = admin.create_principal("second-approver", []).id
    _pending(lambda: admin.grant_role(second, "approver"))
    _pending(lambda: admin.issue_api_key(second, "needs a second admin now"))
    services.runner.catch_up()
    closed = admin.audit_events(type="Closed")["events"]
    assert len(closed) == 1 and closed[0]["aggregate_type"] == "Bootstrap"
