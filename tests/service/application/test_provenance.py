"""Signed provenance of a run: a DSSE envelope, signed by the ledger key, carrying
an in-toto Statement v1 with a SLSA Provenance v1 predicate whose subjects are the
run's artifacts. It verifies with the ledger's public key and with nothing else,
and any changed byte makes it fail. Served by the API with the manifest."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY

from domain.integrity.keys import Signer
from domain.integrity.provenance import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    EnvelopeNotVerified,
    InvalidEnvelope,
    ProvenanceNotReady,
    manifest_digest,
    pae,
    provenance_statement,
    sign_envelope,
    verify_envelope,
)
from projections import manifests as m
from projections.base import ProjectionRunner
from service.api.routers import manifests as manifests_router
from service.app import create_app
from service.application import provenance
from service.bootstrap import Services

ADMIN = "user:admin"
SPEC = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "features": ["a"],
    "target": "y",
    "task": "classification",
}


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def catch_up(services: Services) -> None:
    """Project the log; with a runner of the manifests alone until the service wires them."""
    services.runner.catch_up()
    if m.Manifests.name not in services.runner.projections:
        ProjectionRunner(services.writer_engine, services.runner.select_notifications, [m.Manifests()]).catch_up()


def start_run(services: Services) -> str:
    """A requested runner-mode run on one dataset and one code version."""
    ledger = services.ledger
    ledger.add_pipeline_spec(name="credit-lr", kind="sklearn", spec=SPEC, actor=ADMIN)
    dataset_id = ledger.register_dataset_version(
        name="loans",
        digest=digest("loans"),
        size=2048,
        format="csv",
        schema=[{"name": "a"}, {"name": "y"}],
        row_count=100,
        datasheet={},
        source="upload",
        actor=ADMIN,
    ).id
    code_id = ledger.register_code_version(
        repository="https://example.com/credit.git",
        commit="b" * 40,
        archive_digest=digest("code"),
        entrypoint="train:main",
        actor=ADMIN,
    ).id
    return str(
        ledger.start_run(
            name="nightly",
            mode="runner",
            pipeline="credit-lr",
            pipeline_version=1,
            dataset_version_ids=[dataset_id],
            code_version_id=code_id,
            params={"C": 0.5},
            seed=7,
            device="auto",
            actor=ADMIN,
        ).id
    )


def succeed(services: Services, run_id: str) -> None:
    """Claim, capture, record two artifacts and finish the run."""
    ledger, actor = services.ledger, "runner:runner-1"
    ledger.claim_run(run_id, "runner-1", "host-a")
    environment = {"python": "3.11", "digest": digest("env")}
    ledger.record_environment(run_id, "runner-1", environment, digest("env"), "cpu", None)
    ledger.log_metrics(run_id, [{"key": "auc", "value": 0.8, "step": 0}], actor=actor)
    ledger.record_artifact(run_id, "model.pkl", digest("model"), 10, "application/octet-stream", actor=actor)
    ledger.record_artifact(run_id, "predictions.json", digest("preds"), 20, "application/json", actor=actor)
    ledger.finish_run(run_id, "succeeded", None, actor=actor)


@pytest.fixture
def succeeded(services: Services) -> str:
    run_id = start_run(services)
    succeed(services, run_id)
    catch_up(services)
    return run_id


def envelope_of(services: Services, run_id: str) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return provenance.run_provenance(conn, run_id, services.ledger.signer)


def manifest_of(services: Services, run_id: str) -> m.ManifestPublic:
    with services.engine.connect() as conn:
        found = m.manifest(conn, run_id)
    assert found is not None
    return found


def flipped(text: str, at: int = 10) -> str:
    data = bytearray(base64.b64decode(text))
    data[at] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


# -- the DSSE protocol ----------------------------------------------------------------


def test_pae_is_the_dsse_v1_encoding() -> None:
    # The example of the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_the_signature_is_ed25519_over_the_pae_of_the_payload() -> None:
    signer = Signer.generate()
    envelope = sign_envelope({"_type": STATEMENT_TYPE, "subject": []}, signer)
    body = base64.b64decode(envelope["payload"])
    message = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(body), body)

    signer.public_key.verify(base64.b64decode(envelope["signatures"][0]["sig"]), message)  # raises if wrong
    assert envelope["signatures"][0]["keyid"] == signer.key_id


def test_an_envelope_of_another_payload_type_is_refused() -> None:
    signer = Signer.generate()
    envelope = sign_envelope({"_type": STATEMENT_TYPE}, signer) | {"payloadType": "application/json"}

    with pytest.raises(InvalidEnvelope, match="payloadType"):
        verify_envelope(envelope, signer.public_key)


def test_a_signed_payload_that_is_no_in_toto_statement_is_refused() -> None:
    signer = Signer.generate()
    envelope = sign_envelope({"hello": "world"}, signer)

    with pytest.raises(InvalidEnvelope, match="in-toto"):
        verify_envelope(envelope, signer.public_key)


def test_url_safe_base64_is_accepted() -> None:
    signer = Signer.generate()
    envelope = sign_envelope({"_type": STATEMENT_TYPE, "x": "??>>"}, signer)
    safe = {
        "payloadType": envelope["payloadType"],
        "payload": base64.urlsafe_b64encode(base64.b64decode(envelope["payload"])).decode().rstrip("="),
        "signatures": [
            {"keyid": s["keyid"], "sig": base64.urlsafe_b64encode(base64.b64decode(s["sig"])).decode()}
            for s in envelope["signatures"]
        ],
    }

    assert verify_envelope(safe, signer.public_key)["x"] == "??>>"


# -- a run's provenance ---------------------------------------------------------------


def test_the_envelope_verifies_with_the_ledger_public_key(services: Services, succeeded: str) -> None:
    envelope = envelope_of(services, succeeded)

    statement = verify_envelope(envelope, services.ledger.signer.public_key)

    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [services.ledger.signer.key_id]
    assert statement == json.loads(base64.b64decode(envelope["payload"]))


def test_the_payload_is_an_in_toto_statement_with_slsa_provenance(services: Services, succeeded: str) -> None:
    statement = verify_envelope(envelope_of(services, succeeded), services.ledger.signer.public_key)

    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    inputs = manifest_of(services, succeeded).document["inputs"]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == "https://mlledger.dev/run-kinds/sklearn/v1"
    assert definition["externalParameters"] == {
        "pipeline": {"name": "credit-lr", "version": 1, "spec_digest": inputs["pipeline"]["spec_digest"]},
        "params": {"C": 0.5},
        "seed": 7,
        "device": "auto",
    }
    assert definition["internalParameters"] == {"environment_digest": digest("env"), "device": "cpu"}
    assert definition["resolvedDependencies"] == [
        {"uri": "mlledger:dataset/loans/1", "digest": {"sha256": digest("loans").removeprefix("sha256:")}},
        {"uri": "git+https://example.com/credit.git@" + "b" * 40, "digest": {"gitCommit": "b" * 40}},
        {
            "uri": f"mlledger:code/{inputs['code']['id']}/archive",
            "digest": {"sha256": digest("code").removeprefix("sha256:")},
        },
    ]


def test_the_subjects_are_the_run_artifacts_by_digest(services: Services, succeeded: str) -> None:
    statement = verify_envelope(envelope_of(services, succeeded), services.ledger.signer.public_key)

    assert statement["subject"] == [
        {"name": "model.pkl", "digest": {"sha256": digest("model").removeprefix("sha256:")}},
        {"name": "predictions.json", "digest": {"sha256": digest("preds").removeprefix("sha256:")}},
    ]


def test_run_details_name_the_runner_the_run_and_the_manifest(services: Services, succeeded: str) -> None:
    statement = verify_envelope(envelope_of(services, succeeded), services.ledger.signer.public_key)
    found = manifest_of(services, succeeded)

    details = statement["predicate"]["runDetails"]
    assert details["builder"] == {"id": "https://mlledger.dev/runner/runner-1"}
    assert details["metadata"] == {
        "invocationId": succeeded,
        "startedOn": found.document["execution"]["started_at"],
        "finishedOn": found.document["execution"]["finished_at"],
    }
    assert details["byproducts"][0]["digest"] == {"sha256": found.digest.removeprefix("sha256:")}
    assert manifest_digest(found.document) == found.digest


def test_a_flipped_payload_byte_fails_verification(services: Services, succeeded: str) -> None:
    envelope = envelope_of(services, succeeded)

    with pytest.raises(EnvelopeNotVerified):
        verify_envelope(envelope | {"payload": flipped(envelope["payload"])}, services.ledger.signer.public_key)


def test_a_flipped_signature_byte_fails_verification(services: Services, succeeded: str) -> None:
    envelope = envelope_of(services, succeeded)
    damaged = [{**s, "sig": flipped(s["sig"])} for s in envelope["signatures"]]

    with pytest.raises(EnvelopeNotVerified):
        verify_envelope(envelope | {"signatures": damaged}, services.ledger.signer.public_key)


def test_another_key_fails_verification(services: Services, succeeded: str) -> None:
    envelope = envelope_of(services, succeeded)

    with pytest.raises(EnvelopeNotVerified):
        verify_envelope(envelope, Signer.generate().public_key)


def test_a_run_that_has_not_succeeded_has_no_provenance(services: Services) -> None:
    run_id = start_run(services)
    catch_up(services)

    with pytest.raises(ProvenanceNotReady):
        envelope_of(services, run_id)


def test_a_client_run_without_runner_is_built_by_the_client(services: Services) -> None:
    run_id = services.ledger.start_run(
        name="laptop",
        mode="client",
        pipeline=None,
        pipeline_version=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=1,
        device="cpu",
        actor=ADMIN,
    ).id
    services.ledger.record_artifact(run_id, "model.pt", digest("pt"), 5, "application/octet-stream", actor=ADMIN)
    services.ledger.finish_run(run_id, "succeeded", None, actor=ADMIN)
    catch_up(services)

    statement = provenance_statement(manifest_of(services, run_id).document)

    assert statement["predicate"]["buildDefinition"]["buildType"] == "https://mlledger.dev/run-kinds/client/v1"
    assert statement["predicate"]["runDetails"]["builder"] == {"id": "https://mlledger.dev/client-reported"}
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"] == []


# -- over the API -------------------------------------------------------------------


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    app: FastAPI = create_app(services.settings, run_projector=False, services=services)
    if not any(getattr(route, "path", None) == "/v1/runs/{run_id}/manifest" for route in app.routes):
        app.include_router(manifests_router.router)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def test_the_api_serves_the_manifest_with_its_digest(services: Services, succeeded: str, api: TestClient) -> None:
    response = api.get(f"/v1/runs/{succeeded}/manifest")

    assert response.status_code == 200
    body = response.json()
    found = manifest_of(services, succeeded)
    assert (body["run_id"], body["digest"], body["position"]) == (succeeded, found.digest, found.position)
    assert body["document"] == found.document
    assert manifest_digest(body["document"]) == body["digest"]


def test_the_api_serves_a_provenance_envelope_that_verifies(
    services: Services, succeeded: str, api: TestClient
) -> None:
    response = api.get(f"/v1/runs/{succeeded}/provenance")

    assert response.status_code == 200
    statement = verify_envelope(response.json(), services.ledger.signer.public_key)
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == succeeded


def test_the_api_answers_404_for_an_unknown_run(api: TestClient) -> None:
    for what in ("manifest", "provenance"):
        response = api.get(f"/v1/runs/00000000-0000-0000-0000-000000000000/{what}")

        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


def test_the_api_answers_409_for_provenance_of_an_unfinished_run(services: Services, api: TestClient) -> None:
    run_id = start_run(services)
    catch_up(services)

    response = api.get(f"/v1/runs/{run_id}/provenance")

    assert response.status_code == 409
    assert response.json()["title"] == "Provenance not ready"


def test_the_api_manifest_accepts_min_position(services: Services, api: TestClient) -> None:
    run_id = start_run(services)
    position = services.ledger.position()
    catch_up(services)

    response = api.get(f"/v1/runs/{run_id}/manifest", params={"min_position": position})

    assert response.status_code == 200
    assert response.json()["position"] == position
