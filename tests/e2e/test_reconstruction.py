"""Reconstruction: after a scripted history of two models, five versions,
approvals, rejections, three deployments and a rollback, the lineage and the
champion at any past moment are exactly what happened."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, approve, credit_csv, make_world

from domain.approval import statement_verifies
from domain.integrity.keys import public_key_pem
from domain.integrity.sealing import format_timestamp, parse_timestamp
from service.app import create_app
from service.bootstrap import Services


def _record_version(world: World, model: str, seed: int) -> tuple[int, dict[str, object]]:
    client = world.people["alice"].client
    dataset = client.upload_dataset(f"{model}-data", credit_csv(rows=50, seed=seed), datasheet={"uses": model})
    run = client.start_run(name=f"{model}-{seed}", dataset_version_ids=[dataset.id], seed=seed)
    params = {"seed": seed, "depth": seed % 4 + 1}
    client.log_params(run.id, params)
    for step in range(4):
        client.log_metric(run.id, "auc", 0.7 + seed / 100 + step / 1000, step)
    digest = client.upload_artifact(run.id, "model.bin", f"{model}-{seed}".encode())
    client.finish_run(run.id)
    number, _ = client.register_model_version(model, run.id, "model.bin", [{"name": "age", "type": "int"}])
    return number, {
        "dataset": dataset.id,
        "run": run.id,
        "params": params,
        "digest": digest,
        "final_auc": 0.7 + seed / 100 + 3 / 1000,
    }


def _between(earlier: str, later: str) -> str:
    a, b = parse_timestamp(earlier), parse_timestamp(later)
    return format_timestamp(a + (b - a) / 2)


def _before(moment: str) -> str:
    return format_timestamp(parse_timestamp(moment) - timedelta(microseconds=1))


@pytest.fixture
def history(services: Services) -> Iterator[tuple[World, dict[tuple[str, int], dict[str, object]]]]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        world = make_world(http)
        facts: dict[tuple[str, int], dict[str, object]] = {}
        for model, seeds in (("credit", (1, 2, 3)), ("fraud", (4, 5))):
            for seed in seeds:
                number, recorded = _record_version(world, model, seed)
                facts[(model, number)] = recorded
        for model, number in (("credit", 1), ("credit", 2), ("fraud", 1)):
            approve(world, "bob", model, number)
            approve(world, "carol", model, number)
        approve(world, "bob", "credit", 3)
        approve(world, "carol", "credit", 3, decision="reject")
        approve(world, "bob", "fraud", 2, decision="reject")
        operator = world.people["olivia"].client
        operator.deploy("credit", "champion", 1, reason="first release")
        operator.deploy("credit", "champion", 2, reason="better auc")
        operator.deploy("fraud", "champion", 1, reason="first release")
        operator.deploy("credit", "rollback", 1, reason="v2 drifted")
        services.runner.catch_up()
        yield world, facts


def test_lineage_reconstructs_each_version_exactly(
    history: tuple[World, dict[tuple[str, int], dict[str, object]]],
) -> None:
    world, facts = history
    auditor = world.people["audrey"].client
    people = {p.id: name for name, p in world.people.items()}

    for (model, number), fact in facts.items():
        lineage = auditor.lineage(model, number)

        assert lineage["version"]["artifact_digest"] == fact["digest"]
        assert lineage["run"]["id"] == fact["run"]
        assert lineage["run"]["params"] == fact["params"]
        assert lineage["run"]["final_metrics"]["auc"]["value"] == pytest.approx(fact["final_auc"], abs=1e-12)
        assert [d["id"] for d in lineage["datasets"]] == [fact["dataset"]]
        assert people[lineage["run"]["submitted_by"]] == "alice"

    decisions = {
        (model, number): [(people[a["approver"]], a["decision"]) for a in auditor.lineage(model, number)["approvals"]]
        for model, number in facts
    }
    assert decisions == {
        ("credit", 1): [("bob", "approve"), ("carol", "approve")],
        ("credit", 2): [("bob", "approve"), ("carol", "approve")],
        ("credit", 3): [("bob", "approve"), ("carol", "reject")],
        ("fraud", 1): [("bob", "approve"), ("carol", "approve")],
        ("fraud", 2): [("bob", "reject")],
    }
    states = {(m, n): auditor.lineage(m, n)["version"]["state"] for m, n in facts}
    assert states == {
        ("credit", 1): "approved",
        ("credit", 2): "approved",
        ("credit", 3): "rejected",
        ("fraud", 1): "approved",
        ("fraud", 2): "rejected",
    }


def test_every_recorded_approval_signature_verifies_with_the_approvers_key(
    history: tuple[World, dict[tuple[str, int], dict[str, object]]],
) -> None:
    world, facts = history
    keys = {p.id: public_key_pem(p.signer.public_key) for p in world.people.values() if p.signer}

    for model, number in facts:
        for approval in world.people["audrey"].client.lineage(model, number)["approvals"]:
            assert statement_verifies(approval["statement"], approval["signature"], keys[approval["approver"]])


def test_deployment_history_and_champion_at_any_moment_are_exact(
    history: tuple[World, dict[tuple[str, int], dict[str, object]]],
) -> None:
    world, _ = history
    auditor = world.people["audrey"].client
    credit = auditor.lineage("credit", 1)["deployment_history"]
    fraud = auditor.lineage("fraud", 1)["deployment_history"]
    assert [(c["action"], c["number"]) for c in credit] == [
        ("created", None),
        ("champion", 1),
        ("champion", 2),
        ("rollback", 1),
    ]
    assert [(c["action"], c["number"]) for c in fraud] == [("created", None), ("champion", 1)]
    first, second, rollback = (c["recorded_at"] for c in credit[1:])
    fraud_first = fraud[1]["recorded_at"]
    later = format_timestamp(datetime.fromisoformat(rollback.replace("Z", "+00:00")) + timedelta(days=1))

    answers = {
        moment: auditor.champion_at("credit", moment)["number"]
        for moment in (
            _before(first),
            first,
            _between(first, second),
            second,
            _between(second, rollback),
            rollback,
            later,
        )
    }

    assert list(answers.values()) == [None, 1, 1, 2, 2, 1, 1]
    assert auditor.champion_at("fraud", _before(fraud_first))["number"] is None
    assert auditor.champion_at("fraud", later)["number"] == 1
    assert auditor.champion_at("fraud", later)["decided_at"] == fraud_first
