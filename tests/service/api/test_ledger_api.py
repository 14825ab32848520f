"""The verifier-facing API end to end (SQLite and PostgreSQL): what a client fetches
verifies with the domain's own checks, and bad input gets RFC 9457 problems, never a 500."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import rfc8785
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY

from domain.integrity import merkle
from domain.integrity.checkpoint import Checkpoint, verify_checkpoint
from domain.integrity.keys import Signer, public_key_pem, verify_signature
from service.app import SERVING_GC_THRESHOLDS, create_app
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.workload import append_events
from service.settings import Settings

PROBLEM = "application/problem+json"
LEDGER_PATHS = {
    "/v1/ledger/checkpoint",
    "/v1/ledger/keys",
    "/v1/ledger/events/{notification_id}",
    "/v1/ledger/proofs/inclusion",
    "/v1/ledger/proofs/consistency",
}


def _grow_and_checkpoint(services: Services, events: int) -> None:
    append_events(services.ledger, events, batch=10)
    services.runner.catch_up()
    assert publish_checkpoint_if_due(services, force=True) is not None


def _client(services: Services) -> TestClient:
    client = TestClient(create_app(services.settings, run_projector=False, services=services))
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    return client


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """An API over a ledger of about 50 events, all logged and covered by a checkpoint."""
    _grow_and_checkpoint(services, 50)
    with _client(services) as client:
        yield client


def _get(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _verified_checkpoint(client: TestClient, services: Services) -> Checkpoint:
    note = _get(client, "/v1/ledger/checkpoint")["note"]
    return verify_checkpoint(note, services.settings.log_origin, services.signer.public_key)


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


# -- what a verifier fetches -------------------------------------------------------


def test_the_checkpoint_note_verifies_with_the_ledger_key(client: TestClient, services: Services) -> None:
    body = _get(client, "/v1/ledger/checkpoint")

    checkpoint = verify_checkpoint(body["note"], services.settings.log_origin, services.signer.public_key)

    assert checkpoint.tree_size == body["tree_size"] == services.ledger.position()
    assert checkpoint.root_hash.hex() == body["root_hash"]
    assert body["key_id"] == services.signer.key_id


def test_the_checkpoint_is_not_found_before_one_is_published(services: Services) -> None:
    with _client(services) as client:
        response = client.get("/v1/ledger/checkpoint")

    _problem(response, 404)


def test_the_keys_endpoint_lists_the_current_key(client: TestClient, services: Services) -> None:
    keys = _get(client, "/v1/ledger/keys")

    signer = services.signer
    assert keys == [
        {
            "key_id": signer.key_id,
            "public_key_pem": public_key_pem(signer.public_key),
            "current": True,
            "introduced_at": 1,
            "signs_from": 1,
            "retired_at": None,
            "compromised_since": None,
            "revoked_at": None,
        }
    ]


def test_after_a_rotation_the_keys_endpoint_marks_only_the_new_key_current(
    client: TestClient, services: Services
) -> None:
    old, new = services.ledger.signer, Signer.generate()
    services.ledger.rotate_key(new, reason="scheduled", actor="user:admin")

    keys = _get(client, "/v1/ledger/keys")

    assert {k["key_id"]: k["current"] for k in keys} == {old.key_id: False, new.key_id: True}


def test_an_event_carries_a_seal_that_verifies(client: TestClient, services: Services) -> None:
    notification_id = services.ledger.position() // 2

    event = _get(client, f"/v1/ledger/events/{notification_id}")

    assert event["notification_id"] == notification_id
    assert hashlib.sha256(rfc8785.dumps(event["envelope"])).hexdigest() == event["hash"]
    assert verify_signature(services.signer.public_key, event["signature"], bytes.fromhex(event["hash"]))
    assert event["key_id"] == services.signer.key_id
    assert event["leaf_index"] is not None


def test_every_logged_event_has_an_inclusion_proof_to_the_checkpoint_root(
    client: TestClient, services: Services
) -> None:
    checkpoint = _verified_checkpoint(client, services)
    unproven = []

    for notification_id in range(1, services.ledger.position() + 1):
        event = _get(client, f"/v1/ledger/events/{notification_id}")
        proof = _get(client, "/v1/ledger/proofs/inclusion", notification_id=notification_id)
        leaf = merkle.leaf_hash(bytes.fromhex(event["hash"]))
        if not (
            proof["tree_size"] == checkpoint.tree_size
            and proof["leaf_hash"] == leaf.hex()
            and merkle.verify_inclusion(
                leaf,
                proof["leaf_index"],
                proof["tree_size"],
                [bytes.fromhex(p) for p in proof["proof"]],
                checkpoint.root_hash,
            )
        ):
            unproven.append(notification_id)

    assert unproven == []


def test_an_inclusion_proof_comes_with_the_checkpoint_of_its_size(client: TestClient, services: Services) -> None:
    note = _get(client, "/v1/ledger/checkpoint")["note"]

    proof = _get(client, "/v1/ledger/proofs/inclusion", notification_id=3)

    assert proof["checkpoint"] == note


def test_a_consistency_proof_links_two_checkpoints(client: TestClient, services: Services) -> None:
    older = _verified_checkpoint(client, services)
    _grow_and_checkpoint(services, 30)
    newer = _verified_checkpoint(client, services)

    body = _get(client, "/v1/ledger/proofs/consistency", **{"from": older.tree_size, "to": newer.tree_size})

    assert newer.tree_size > older.tree_size
    assert (body["from_root"], body["to_root"]) == (older.root_hash.hex(), newer.root_hash.hex())
    assert merkle.verify_consistency(
        older.tree_size, newer.tree_size, older.root_hash, newer.root_hash, [bytes.fromhex(p) for p in body["proof"]]
    )


def test_an_older_inclusion_proof_still_verifies_against_its_own_checkpoint(
    client: TestClient, services: Services
) -> None:
    older = _verified_checkpoint(client, services)
    _grow_and_checkpoint(services, 30)

    proof = _get(client, "/v1/ledger/proofs/inclusion", notification_id=5, tree_size=older.tree_size)

    assert merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        proof["leaf_index"],
        older.tree_size,
        [bytes.fromhex(p) for p in proof["proof"]],
        older.root_hash,
    )


# -- errors ---------------------------------------------------------------------


def test_an_unknown_notification_id_is_a_404_problem(client: TestClient, services: Services) -> None:
    response = client.get(f"/v1/ledger/events/{services.ledger.position() + 1000}")

    assert _problem(response, 404)["field"] == "notification_id"


def test_a_non_integer_notification_id_is_a_422_problem_naming_the_field(client: TestClient) -> None:
    response = client.get("/v1/ledger/events/seven")

    assert _problem(response, 422)["field"] == "notification_id"


@pytest.mark.parametrize("where", ["beyond-the-log", "at-the-leaf", "zero"])
def test_a_tree_size_out_of_range_is_a_422_problem_naming_tree_size(
    client: TestClient, services: Services, where: str
) -> None:
    notification_id = 10
    leaf_index = _get(client, f"/v1/ledger/events/{notification_id}")["leaf_index"]
    tree_size = {"beyond-the-log": services.ledger.position() + 1, "at-the-leaf": leaf_index, "zero": 0}[where]

    response = client.get(
        "/v1/ledger/proofs/inclusion", params={"notification_id": notification_id, "tree_size": tree_size}
    )

    assert _problem(response, 422)["field"] == "tree_size"


def test_a_consistency_proof_from_a_larger_to_a_smaller_tree_is_a_422_problem(client: TestClient) -> None:
    response = client.get("/v1/ledger/proofs/consistency", params={"from": 20, "to": 10})

    assert _problem(response, 422)["field"] in {"from", "to"}


def test_a_consistency_proof_beyond_the_log_is_a_422_problem(client: TestClient, services: Services) -> None:
    response = client.get("/v1/ledger/proofs/consistency", params={"from": 1, "to": services.ledger.position() + 1})

    _problem(response, 422)


BAD_INPUTS = [
    "/v1/ledger/events/0",
    "/v1/ledger/events/-1",
    "/v1/ledger/events/1.5",
    "/v1/ledger/events/seven",
    "/v1/ledger/events/99999999999999999999999999",
    "/v1/ledger/events/%F0%9F%98%80",
    "/v1/ledger/events/1000000",
    "/v1/ledger/proofs/inclusion",
    "/v1/ledger/proofs/inclusion?notification_id=abc",
    "/v1/ledger/proofs/inclusion?notification_id=1000000",
    "/v1/ledger/proofs/inclusion?notification_id=5&tree_size=0",
    "/v1/ledger/proofs/inclusion?notification_id=5&tree_size=4",
    "/v1/ledger/proofs/inclusion?notification_id=5&tree_size=1000000",
    "/v1/ledger/proofs/inclusion?notification_id=5&tree_size=99999999999999999999999",
    "/v1/ledger/proofs/consistency",
    "/v1/ledger/proofs/consistency?from=5",
    "/v1/ledger/proofs/consistency?from=0&to=5",
    "/v1/ledger/proofs/consistency?from=20&to=10",
    "/v1/ledger/proofs/consistency?from=1&to=1000000",
    "/v1/ledger/proofs/consistency?from=x&to=y",
]


def test_bad_input_gets_a_client_error_problem_never_a_500(client: TestClient) -> None:
    answers = {url: client.get(url) for url in BAD_INPUTS}

    offenders = {
        url: (r.status_code, r.headers["content-type"])
        for url, r in answers.items()
        if not (400 <= r.status_code < 500 and r.headers["content-type"].startswith(PROBLEM))
    }
    assert offenders == {}


# -- probes and schema -------------------------------------------------------------


def test_healthz_answers_ok(client: TestClient) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_reports_the_ledger_position_and_no_projection_lag(client: TestClient, services: Services) -> None:
    body = _get(client, "/readyz")

    assert body["status"] == "ok"
    assert body["position"] == services.ledger.position()
    assert "transparency_log" in body["projection_lag"]
    assert set(body["projection_lag"].values()) == {0}


def test_the_openapi_schema_lists_the_ledger_paths(client: TestClient) -> None:
    paths = set(_get(client, "/openapi.json")["paths"])

    assert paths >= LEDGER_PATHS


def test_a_serving_process_collects_cycles_rarely_and_freezes_what_start_up_built(
    services: Services, settings: Settings
) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        with TestClient(create_app(settings, run_projector=False)) as http:  # opens services of its own
            assert http.get("/healthz").status_code == 200
            assert gc.get_threshold() == SERVING_GC_THRESHOLDS
            assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
