"""A version whose fairness report shows an impact ratio under the policy's minimum cannot be approved."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support.serving_world import FEATURES, MODEL, approve_all, make_people, train_versions

from domain.report import FAIRNESS, Report
from mlledger.client import ChangePending, LedgerClientError
from service.app import create_app
from service.bootstrap import Services


def biased_csv(rows: int = 400, seed: int = 9) -> bytes:
    """Income (a feature) depends on sex (protected, not a feature), so approvals do too."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*FEATURES, "sex", "approved"])
    writer.writeheader()
    for _ in range(rows):
        sex = rng.choice(["f", "m"])
        income = rng.gauss(45_000 if sex == "f" else 75_000, 8_000)
        debt = rng.uniform(0, 10_000)
        writer.writerow(
            {
                "age": rng.randint(18, 80),
                "income": round(income, 2),
                "debt": round(debt, 2),
                "sex": sex,
                "approved": int(income - debt > 55_000),
            }
        )
    return out.getvalue().encode()


@pytest.fixture
def http(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from support import serving_world

    monkeypatch.setattr(serving_world, "credit_csv", biased_csv)
    with TestClient(create_app(services.settings, run_workers=False, services=services)) as client:
        yield client


def test_an_unfair_version_cannot_be_approved_until_the_policy_allows_it(http: TestClient, services: Services) -> None:
    world = make_people(http)
    (number,) = train_versions(world, services, seeds=[3])
    world.admin.request("PUT", f"/v1/models/{MODEL}/policy", json={"min_impact_ratio": 0.8})
    services.runner.catch_up()
    assert http.app.state.serving.reports.run_once() == 1  # type: ignore[attr-defined]
    report = services.ledger.get(
        Report.create_id(model_version_id=world.admin.model_version(MODEL, number)["id"], kind=FAIRNESS), Report
    )
    (sex,) = report.summary["attributes"]
    rates = {g["group"]: g["selection_rate"] for g in sex["groups"]}
    assert rates["f"] / rates["m"] == pytest.approx(sex["min_impact_ratio"])
    assert sex["min_impact_ratio"] < 0.8
    bob = world.people["bob"]
    assert bob.signer is not None and bob.key_id is not None

    with pytest.raises(LedgerClientError) as refused:
        bob.client.decide(MODEL, number, bob.signer, bob.key_id, "approve", "looks accurate")

    assert refused.value.status == 409
    assert "impact ratio" in refused.value.problem["detail"] and "sex" in refused.value.problem["detail"]
    with pytest.raises(ChangePending) as weakening:  # turning the gate off is a weaker policy: two admins
        world.admin.set_policy(MODEL, {"min_impact_ratio": None})
    assert world.second is not None
    world.second.confirm_change(weakening.value.change_id)
    bob.client.decide(MODEL, number, bob.signer, bob.key_id, "approve", "accepted with a documented rationale")
    assert world.admin.model_version(MODEL, number)["approvers"] == [bob.id]


@pytest.fixture
def fair_http(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, run_workers=False, services=services)) as client:
        yield client


def test_the_fairness_gate_fails_closed_until_the_report_exists_at_approval_and_at_deployment(
    fair_http: TestClient, services: Services
) -> None:
    world = make_people(fair_http)
    first, second = train_versions(world, services, seeds=[3, 4])  # registered with min_impact_ratio: null
    approve_all(world, [first])
    world.admin.request("PUT", f"/v1/models/{MODEL}/policy", json={"min_impact_ratio": 0.8})
    bob, olivia = world.people["bob"], world.people["olivia"]
    assert bob.signer is not None and bob.key_id is not None

    with pytest.raises(LedgerClientError) as approval:
        bob.client.decide(MODEL, second, bob.signer, bob.key_id, "approve", "before the report")
    with pytest.raises(LedgerClientError) as deployment:
        olivia.client.deploy(MODEL, "champion", first, reason="approved before the policy asked for fairness")

    for refused in (approval, deployment):
        assert refused.value.status == 409
        assert refused.value.problem["type"].endswith("/fairness-report-missing")
        assert "no fairness report yet" in refused.value.problem["detail"]
    assert approval.value.problem["field"] == "statement.decision"
    assert deployment.value.problem["field"] == "version"
    assert world.admin.model_version(MODEL, second)["approvers"] == []
    services.runner.catch_up()
    assert fair_http.app.state.serving.reports.run_once() == 2  # type: ignore[attr-defined]
    olivia.client.deploy(MODEL, "champion", first, reason="fair on its validation rows")
    bob.client.decide(MODEL, second, bob.signer, bob.key_id, "approve", "after the report")
    assert world.admin.model_version(MODEL, second)["approvers"] == [bob.id]
