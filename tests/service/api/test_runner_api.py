"""The runner protocol over HTTP: a runner principal claims, fetches by digest, uploads and hands in a
signed execution statement; the service refuses what a runner cannot vouch for and records nothing then."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.runner_http import RunnerPrincipal, runner_principal
from support.runner_world import dataset, request, sklearn_pipeline

from domain.execution import execution_statement, statement_message
from domain.integrity.keys import Signer
from domain.run import Run
from service.app import create_app
from service.bootstrap import Services
from service.runners.gateway import HttpGateway, LedgerRefused
from service.runners.work import Output, WorkOrder

CLAIM = {
    "runner_id": "box-1-abc",
    "host": "box",
    "device": "cpu",
    "device_note": None,
    "backend": "local",
    "environment": {"python": "3.11", "os": "linux"},
}


@pytest.fixture
def http(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as client:
        yield client


@pytest.fixture
def principal(services: Services) -> RunnerPrincipal:
    return runner_principal(services)


def _gateway(http: TestClient, principal: RunnerPrincipal, signer: Signer | None = None) -> HttpGateway:
    return HttpGateway("http://testserver", principal.api_key, signer or Signer.generate(), client=http)


def _claimed(services: Services, gateway: HttpGateway, pipeline: str = "logreg") -> WorkOrder:
    run_id = request(services, sklearn_pipeline(services, pipeline), dataset(services, pipeline))
    assert run_id in {item["run_id"] for item in gateway.requested()}
    order = gateway.claim(run_id, CLAIM)
    assert order is not None
    return order


def _statement(gateway: HttpGateway, order: WorkOrder, outputs: list[Output], **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "run_id": order.run_id,
        "runner_id": CLAIM["runner_id"],
        "principal_id": gateway.principal_id,
        "key_id": gateway.signer.key_id,
        "outcome": "succeeded",
        "error": None,
        "inputs": [order.spec_digest, *(item.digest for item in order.inputs)],
        "environment_digest": order.environment_digest,
        "outputs": [item.to_json() for item in outputs],
        "metrics": [{"key": "accuracy", "value": 0.9, "step": 0}],
        "resources": {"cpu_seconds": 1.5, "wall_seconds": 2.0, "host": "box", "backend": "local"},
    }
    values.update(changes)
    return execution_statement(**values)


def _events(services: Services, run_id: str) -> list[str]:
    return [type(event).__name__ for event in services.ledger.events.get(uuid.UUID(run_id))]


def test_a_runner_principal_claims_fetches_uploads_and_records_a_signed_result(
    services: Services, http: TestClient, principal: RunnerPrincipal, tmp_path: Path
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)

    (data,) = order.datasets
    fetched = gateway.fetch(order, data, tmp_path / "cache")
    model = tmp_path / "model.pkl"
    model.write_bytes(b"a model")
    output = gateway.upload(order, model)
    metrics = [{"key": "accuracy", "value": 0.9, "step": 0}]
    statement = _statement(gateway, order, [output])
    gateway.record(order, statement, gateway.signer.sign(statement_message(statement)), metrics, None)

    run: Run = services.ledger.get(order.run_id, Run)
    attested = next(e for e in services.ledger.events.get(run.id) if isinstance(e, Run.ExecutionAttested))
    assert "sha256:" + hashlib.sha256(fetched.read_bytes()).hexdigest() == data.digest
    assert run.status == "succeeded"
    assert run.artifacts == {"model.pkl": output.digest}
    assert run.resources is not None and run.resources["cpu_seconds"] == 1.5
    assert (attested.principal_id, attested.key_id) == (principal.id, gateway.signer.key_id)
    assert attested.statement["runner_id"] == CLAIM["runner_id"]


def test_a_cached_input_changed_after_it_was_checked_is_fetched_again(
    services: Services, http: TestClient, principal: RunnerPrincipal, tmp_path: Path
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    (data,) = order.datasets
    cached = gateway.fetch(order, data, tmp_path / "cache")
    original = cached.read_bytes()

    assert gateway.fetch(order, data, tmp_path / "cache") == cached  # unchanged: the checked copy
    cached.write_bytes(original + b"1,2,3\n")
    again = gateway.fetch(order, data, tmp_path / "cache")

    assert again.read_bytes() == original
    assert "sha256:" + hashlib.sha256(again.read_bytes()).hexdigest() == data.digest


def test_a_statement_signed_by_another_key_is_refused_and_nothing_is_recorded(
    services: Services, http: TestClient, principal: RunnerPrincipal, tmp_path: Path
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    before = _events(services, order.run_id)
    statement = _statement(gateway, order, [])
    forged = Signer.generate().sign(statement_message(statement))

    with pytest.raises(LedgerRefused) as refused:
        gateway.record(order, statement, forged, [{"key": "accuracy", "value": 0.9, "step": 0}], None)

    assert refused.value.status == 422
    assert "does not verify" in refused.value.detail
    assert _events(services, order.run_id) == before
    assert services.ledger.get(order.run_id, Run).status == "running"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"inputs": ["sha256:" + "0" * 64]}, "recorded inputs"),
        ({"environment_digest": "sha256:" + "1" * 64}, "environment"),
        ({"run_id": "another-run"}, "another run"),
        ({"key_id": "not-a-registered-key"}, "no registered signing key"),
    ],
)
def test_a_statement_that_does_not_match_the_run_is_refused(
    services: Services, http: TestClient, principal: RunnerPrincipal, change: dict[str, Any], says: str
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    before = _events(services, order.run_id)
    statement = _statement(gateway, order, [], **change)

    with pytest.raises(LedgerRefused) as refused:
        gateway.record(
            order,
            statement,
            gateway.signer.sign(statement_message(statement)),
            [{"key": "accuracy", "value": 0.9, "step": 0}],
            None,
        )

    assert refused.value.status == 422
    assert says in refused.value.detail
    assert _events(services, order.run_id) == before


def test_outputs_never_uploaded_and_metrics_not_signed_are_refused(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    ghost = Output("model.pkl", "sha256:" + "2" * 64, 10, "application/octet-stream")
    statement = _statement(gateway, order, [ghost])
    signature = gateway.signer.sign(statement_message(statement))

    with pytest.raises(LedgerRefused, match="was not uploaded"):
        gateway.record(order, statement, signature, [{"key": "accuracy", "value": 0.9, "step": 0}], None)
    honest = _statement(gateway, order, [])
    with pytest.raises(LedgerRefused, match="metrics_digest"):
        gateway.record(
            order, honest, gateway.signer.sign(statement_message(honest)), [{"key": "accuracy", "value": 1.0}], None
        )


def test_a_revoked_runner_key_can_no_longer_vouch(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    services.ledger.revoke_signing_key(principal.id, gateway.signer.key_id, "stolen", actor=principal.id)
    statement = _statement(gateway, order, [])

    with pytest.raises(LedgerRefused) as refused:
        gateway.record(
            order,
            statement,
            gateway.signer.sign(statement_message(statement)),
            [{"key": "accuracy", "value": 0.9, "step": 0}],
            None,
        )

    assert refused.value.status == 422
    assert "revoked" in refused.value.detail


def test_the_run_token_opens_exactly_its_run_while_it_is_active(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    other = _claimed(services, gateway, "other")
    (data,) = order.datasets
    url = f"/v1/runner/runs/{order.run_id}/inputs/{data.digest}"

    assert http.get(url, headers={"X-Run-Token": order.run_token, "Authorization": ""}).status_code == 200
    assert http.get(url, headers={"X-Run-Token": other.run_token, "Authorization": ""}).status_code == 403
    assert http.get(url, headers={"X-Run-Token": "0" * 64, "Authorization": ""}).status_code == 403
    stranger = f"/v1/runner/runs/{order.run_id}/inputs/sha256:{'3' * 64}"
    assert http.get(stranger, headers={"X-Run-Token": order.run_token, "Authorization": ""}).status_code == 404
    services.ledger.finish_run(order.run_id, "cancelled", "stop", actor="alice")
    closed = http.get(url, headers={"X-Run-Token": order.run_token, "Authorization": ""})
    assert closed.status_code == 403
    assert "no longer opens" in closed.json()["detail"]


def test_another_runner_principal_cannot_touch_a_run_it_does_not_hold(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    order = _claimed(services, _gateway(http, principal))
    intruder = runner_principal(services, "runner-2")
    (data,) = order.datasets
    headers = {"Authorization": f"Bearer {intruder.api_key}"}

    answer = http.get(f"/v1/runner/runs/{order.run_id}/inputs/{data.digest}", headers=headers)
    upload = http.put(f"/v1/runner/runs/{order.run_id}/outputs", content=b"x", headers=headers)

    assert (answer.status_code, upload.status_code) == (403, 403)


def test_a_claimed_run_cannot_be_claimed_twice(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)

    assert gateway.claim(order.run_id, {**CLAIM, "runner_id": "box-2-def"}) is None


def test_a_claim_of_several_runs_passes_over_those_already_taken_and_names_them(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    pipeline, data = sklearn_pipeline(services, "logreg"), dataset(services, "logreg")
    taken, free, later = (request(services, pipeline, data, seed=seed) for seed in (1, 2, 3))
    assert gateway.claim(taken, {**CLAIM, "runner_id": "box-2-def"}) is not None

    order, passed = gateway.claim_first([taken, free, later], CLAIM)

    assert order is not None and order.run_id == free
    assert passed == [taken]
    run: Run = services.ledger.get(free, Run)
    assert (run.status, run.runner_id, run.environment["seed"]) == ("running", CLAIM["runner_id"], 2)
    assert services.ledger.get(later, Run).status == "requested"


def test_a_claim_of_several_runs_claims_nothing_when_every_one_is_taken(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    gateway = _gateway(http, principal)
    first, second = _claimed(services, gateway), _claimed(services, gateway, "other")

    order, passed = gateway.claim_first([first.run_id, second.run_id], {**CLAIM, "runner_id": "box-2-def"})

    assert order is None
    assert passed == [first.run_id, second.run_id]
    assert services.ledger.get(first.run_id, Run).runner_id == CLAIM["runner_id"]


def test_outputs_uploaded_in_one_request_can_be_vouched_for(
    services: Services, http: TestClient, principal: RunnerPrincipal, tmp_path: Path
) -> None:
    gateway = _gateway(http, principal)
    order = _claimed(services, gateway)
    files = [tmp_path / "model.pkl", tmp_path / "predictions.json", tmp_path / "execution.json"]
    for index, path in enumerate(files):
        path.write_bytes(f"output {index}".encode() * (index + 1))

    outputs = gateway.upload_all(order, files)
    statement = _statement(gateway, order, outputs, metrics=[])
    gateway.record(order, statement, gateway.signer.sign(statement_message(statement)), [], None)

    run: Run = services.ledger.get(order.run_id, Run)
    assert [item.digest for item in outputs] == ["sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert run.status == "succeeded"
    assert run.artifacts == {path.name: item.digest for path, item in zip(files, outputs, strict=True)}


def test_a_batch_of_outputs_whose_sizes_do_not_match_the_body_is_refused(
    services: Services, http: TestClient, principal: RunnerPrincipal
) -> None:
    order = _claimed(services, _gateway(http, principal))

    answer = http.put(
        f"/v1/runner/runs/{order.run_id}/outputs:batch",
        params={"size": [3, 10]},
        content=b"abcdef",
        headers={"X-Run-Token": order.run_token, "Content-Type": "application/octet-stream"},
    )

    assert answer.status_code == 422
    assert "shorter" in answer.json()["detail"]
