"""Models trained elsewhere and registered from client-reported runs: skops and ONNX versions are served with
reason codes like runner-trained ones; a pickle and a malformed skops tree are refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
from fastapi.testclient import TestClient
from sklearn.ensemble import GradientBoostingClassifier
from support.governance_world import World
from support.ledger import make_settings
from support.serving_world import FEATURES, credit_csv, credit_rows, features_of, make_people

from mlledger.client import LedgerClientError
from service.app import create_app
from service.bootstrap import Services, open_services

DESCRIPTION = {"task": "classification", "features": FEATURES, "classes": [0, 1]}


@dataclass
class Client:
    """The people, the services, and the client's locally trained model."""

    world: World
    services: Services
    model: GradientBoostingClassifier
    dataset_id: str


@pytest.fixture(scope="module")
def client_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    settings = make_settings("sqlite", Path(tmp_path_factory.mktemp("client-models")) / "data")
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_workers=False, services=services)) as http:
            world = make_people(http)
            dataset = world.people["alice"].client.upload_dataset(
                "credit", credit_csv(), datasheet={"motivation": "credit decisions", "protected_attributes": ["sex"]}
            )
            rows = credit_rows(400, seed=5)
            X = np.array([[row[f] for f in FEATURES] for row in rows], dtype=np.float64)
            y = np.array([row["approved"] for row in rows])
            model = GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0).fit(X, y)
            yield Client(world, services, model, dataset.id)
    finally:
        services.close()


def _register_and_deploy(client: Client, name: str, artifact: str, data: bytes, described: bool = True) -> int:
    """A client-reported run with the model file (and its description), a version, two approvals, a champion."""
    world = client.world
    alice = world.people["alice"].client
    run = alice.start_run(name=f"{name}-trained-elsewhere", dataset_version_ids=[client.dataset_id])
    alice.upload_artifact(run.id, artifact, data)
    if described:
        alice.upload_artifact(run.id, "serving.json", json.dumps(DESCRIPTION).encode(), "application/json")
    alice.finish_run(run.id)
    number, _ = alice.register_model_version(
        name,
        run.id,
        artifact,
        input_schema=[{"name": f, "type": "number"} for f in FEATURES],
        policy={"min_impact_ratio": None},
    )
    for approver in ("bob", "carol"):
        person = world.people[approver]
        assert person.signer is not None and person.key_id is not None
        person.client.decide(name, number, person.signer, person.key_id, "approve", f"{approver} validated it")
    world.people["olivia"].client.deploy(name, "champion", number, reason="trained elsewhere, validated here")
    return number


def _onnx(model: GradientBoostingClassifier) -> bytes:
    from skl2onnx import to_onnx

    proto = to_onnx(model, np.zeros((1, len(FEATURES)), dtype=np.float32), options={id(model): {"zipmap": False}})
    return bytes(proto.SerializeToString())


def _served(client: Client, name: str, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One prediction of the deployed model, and its reconstructed decision."""
    row = credit_rows(1, seed=sum(map(ord, request_id)))[0]
    answer = client.world.people["pia"].client.predict(name, features_of(row), request_id=request_id)
    decision = client.world.people["audrey"].client.decision(answer["prediction_id"], min_position=answer["position"])
    return answer, decision


@pytest.mark.parametrize(("form", "explainer"), [("skops", "tree"), ("onnx", "permutation")])
def test_a_model_trained_elsewhere_is_served_with_reason_codes(client_world: Client, form: str, explainer: str) -> None:
    data = skops.io.dumps(client_world.model) if form == "skops" else _onnx(client_world.model)
    name = f"credit-{form}"
    number = _register_and_deploy(client_world, name, f"model.{form}", data)

    answer, decision = _served(client_world, name, f"{form}-1")

    row = decision["input"]
    expected = client_world.model.predict_proba(np.array([[row[f] for f in FEATURES]]))[0, 1]
    assert answer["version"] == number
    assert answer["output"]["probability"] == pytest.approx(expected, abs=1e-5)
    codes = answer["reason_codes"]
    assert 1 <= len(codes) <= 4 and {c["feature"] for c in codes} <= set(FEATURES)
    assert any(abs(c["contribution"]) > 0 for c in codes)
    assert {c["feature"]: c["value"] for c in codes} == {c["feature"]: row[c["feature"]] for c in codes}
    assert decision["explanation"]["explainer"] == explainer
    assert decision["lineage"]["version"]["number"] == number


def test_a_pickle_from_a_client_reported_run_is_refused_for_serving(client_world: Client) -> None:
    _register_and_deploy(client_world, "credit-pickle", "model.pkl", pickle.dumps(client_world.model))
    before = client_world.services.ledger.position()

    with pytest.raises(LedgerClientError) as refused:
        _served(client_world, "credit-pickle", "pickle-1")

    assert refused.value.status == 409
    assert "pickles are never loaded" in refused.value.problem["detail"]
    assert client_world.services.ledger.position() == before


def test_a_skops_model_with_a_malformed_tree_is_refused_for_serving(client_world: Client) -> None:
    data = skops.io.dumps(client_world.model)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    trees: list[Any] = [schema]
    while trees:  # the first tree's first split gets a child far beyond its nodes
        node = trees.pop()
        if isinstance(node, dict) and node.get("__class__") == "Tree":
            file = node["content"]["content"]["nodes"]["file"]
            nodes = np.load(io.BytesIO(members[file]))
            nodes["right_child"][0] = 1_000_000
            out = io.BytesIO()
            np.save(out, nodes)
            members[file] = out.getvalue()
            break
        trees.extend(node.values() if isinstance(node, dict) else node if isinstance(node, list) else [])
    malformed = io.BytesIO()
    with zipfile.ZipFile(malformed, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    _register_and_deploy(client_world, "credit-malformed", "model.skops", malformed.getvalue())
    before = client_world.services.ledger.position()

    with pytest.raises(LedgerClientError) as refused:
        _served(client_world, "credit-malformed", "malformed-1")

    assert refused.value.status == 422
    assert "child index beyond" in refused.value.problem["detail"]
    assert client_world.services.ledger.position() == before


def test_a_client_model_without_its_description_is_refused_for_serving(client_world: Client) -> None:
    _register_and_deploy(
        client_world, "credit-undescribed", "model.skops", skops.io.dumps(client_world.model), described=False
    )

    with pytest.raises(LedgerClientError) as refused:
        _served(client_world, "credit-undescribed", "undescribed-1")

    assert refused.value.status == 409 and "serving.json" in refused.value.problem["detail"]
