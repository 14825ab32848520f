"""Predictions served elsewhere, logged through the API: recorded only for an approved version in the role it
held when they were made, then reconstructed, monitored, erased and exported like served ones."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.ledger import drop_schema, make_settings, require_postgres
from support.serving_world import (
    FEATURES,
    MODEL,
    Deployed,
    approve_all,
    credit_rows,
    features_of,
    make_people,
    train_versions,
)

from mlledger.client import LedgerClient
from service.app import create_app
from service.bootstrap import open_services
from service.exports.verify_bundle import verify_bundle

MAX_ROWS = 500


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """v1 the champion, v2 approved and never deployed, v3 registered and not approved."""
    if request.param == "postgres":
        require_postgres()
    settings = make_settings(request.param, Path(tmp_path_factory.mktemp("logged")) / "data", max_batch_rows=MAX_ROWS)
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_workers=False, services=services)) as http:
            world = make_people(http)
            versions = train_versions(world, services, [1, 2, 3])
            approve_all(world, versions[:2])
            world.people["olivia"].client.deploy(MODEL, "champion", versions[0], reason="first release")
            services.runner.catch_up()
            http.app.state.serving.reports.run_once()  # type: ignore[attr-defined]
            services.runner.catch_up()
            yield Deployed(world, services, versions)
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _records(rows: list[dict[str, Any]], prefix: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "input": features_of(row),
            "output": {"label": int(row["approved"]), "probability": 0.9 if row["approved"] else 0.1},
            "predicted_at": _now(),
            "request_id": f"{prefix}-{i}",
            **extra,
        }
        for i, row in enumerate(rows)
    ]


def _log(client: LedgerClient, version: int, records: list[dict[str, Any]], role: str = "champion") -> Any:
    return client.http.post(
        f"/v1/models/{MODEL}/predictions:log",
        json={"version": version, "role": role, "records": records},
        headers=client.headers,
    )


def _pia(deployed: Deployed) -> LedgerClient:
    return deployed.world.people["pia"].client


def test_predictions_made_elsewhere_by_the_champion_are_logged_and_reconstructed(deployed: Deployed) -> None:
    pia, audrey = _pia(deployed), deployed.world.people["audrey"].client
    rows = credit_rows(3, seed=201)
    records = _records(rows, "elsewhere")
    records[0]["reason_codes"] = [{"feature": "income", "contribution": 1.5}, {"feature": "debt", "contribution": -0.4}]
    records[0]["latency_ms"] = 3.25

    answer = _log(pia, deployed.versions[0], records)

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert [p["request_id"] for p in body["predictions"]] == ["elsewhere-0", "elsewhere-1", "elsewhere-2"]
    assert int(answer.headers["X-Ledger-Position"]) == body["position"]
    decision = audrey.decision("elsewhere-0", min_position=body["position"])
    assert decision["prediction_id"] == body["predictions"][0]["prediction_id"]
    assert decision["origin"] == "logged" and decision["caller"] == deployed.world.people["pia"].id
    assert decision["predicted_at"].startswith(records[0]["predicted_at"][:19])
    assert decision["input"] == features_of(rows[0]) and decision["output"] == records[0]["output"]
    assert decision["reason_codes"] == [
        {"feature": "income", "value": rows[0]["income"], "contribution": 1.5},
        {"feature": "debt", "value": rows[0]["debt"], "contribution": -0.4},
    ]
    assert decision["latency_ms"] == 3.25
    assert decision["champion_at_time"]["number"] == deployed.versions[0]
    assert len(decision["lineage"]["approvals"]) == 2
    assert decision["event"]["hash"]


def test_an_unapproved_version_is_refused_and_nothing_is_recorded(deployed: Deployed) -> None:
    before = deployed.services.ledger.position()

    answer = _log(_pia(deployed), deployed.versions[2], _records(credit_rows(2, seed=202), "unapproved"))

    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "not approved" in answer.json()["detail"]
    assert deployed.services.ledger.position() == before


@pytest.mark.parametrize(
    ("which", "role", "when", "status", "said"),
    [
        (1, "champion", "now", 409, "was not the champion"),  # approved, never deployed
        (0, "canary", "now", 409, "was not the canary"),  # deployed, in another role
        (0, "champion", "2020-01-01T00:00:00Z", 409, "was not deployed yet"),  # before the deployment
        (0, "champion", "future", 422, "after the ledger's clock"),
        (0, "champion", "2026-13-01T00:00:00Z", 422, "RFC 3339"),
        (0, "champion", "2026-11-01T00:00:00", 422, "time zone"),
    ],
)
def test_a_version_not_in_that_role_at_that_time_is_refused(
    deployed: Deployed, which: int, role: str, when: str, status: int, said: str
) -> None:
    records = _records(credit_rows(2, seed=203), f"role-{which}-{role}-{status}")
    moment = {"now": _now(), "future": (datetime.now(UTC) + timedelta(minutes=5)).isoformat()}.get(when, when)
    records[1]["predicted_at"] = moment
    before = deployed.services.ledger.position()

    answer = _log(_pia(deployed), deployed.versions[which], records, role=role)

    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert said in problem["detail"]
    if status == 422:
        assert problem["field"] == "records.1.predicted_at"
    assert deployed.services.ledger.position() == before


def test_a_stopped_deployment_logged_nothing_while_it_was_stopped(deployed: Deployed) -> None:
    olivia = deployed.world.people["olivia"].client
    olivia.deploy(MODEL, "stop", reason="incident 7")
    during = _now()
    olivia.deploy(MODEL, "resume", reason="incident 7 closed")
    records = _records(credit_rows(1, seed=204), "while-stopped")
    records[0]["predicted_at"] = during

    answer = _log(_pia(deployed), deployed.versions[0], records)

    assert answer.status_code == 409 and "was stopped" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        (lambda r: r[0]["input"].pop("debt"), 422, "records.0.input.debt"),  # a column short
        (lambda r: r[1]["input"].update(extra=1), 422, "records.1.input.extra"),  # a column too many
        (lambda r: r[0]["input"].update(income="high"), 422, "records.0.input.income"),
        (lambda r: r[0].update(output={}), 422, "records.0.output"),
        (lambda r: r[0].update(reason_codes=[{"feature": "zip", "contribution": 1}]), 422, "records.0.reason_codes.0"),
        (lambda r: r[1].update(request_id=r[0]["request_id"]), 422, "records.1.request_id"),
        (lambda r: r[0].update(colour="red"), 422, "records.0.colour"),  # read by pydantic, which names it
        (lambda r: r[1].update(latency_ms=-1), 422, "records.1.latency_ms"),
    ],
)
def test_bad_records_are_a_problem_naming_the_field_and_nothing_is_recorded(
    deployed: Deployed, change: Any, status: int, field: str
) -> None:
    records = _records(credit_rows(2, seed=205), f"bad-{field}")
    change(records)
    before = deployed.services.ledger.position()

    answer = _log(_pia(deployed), deployed.versions[0], records)

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["field"].startswith(field)
    assert deployed.services.ledger.position() == before


def test_an_oversized_batch_an_unknown_version_or_model_and_a_replay_are_refused(deployed: Deployed) -> None:
    pia = _pia(deployed)
    before = deployed.services.ledger.position()

    oversized = _log(pia, deployed.versions[0], _records(credit_rows(MAX_ROWS + 1, seed=206), "big"))
    unknown_version = _log(pia, 99, _records(credit_rows(1, seed=206), "v99"))
    unknown_model = pia.http.post(
        "/v1/models/no-such-model/predictions:log",
        json={"version": 1, "records": _records(credit_rows(1, seed=206), "nomodel")},
        headers=pia.headers,
    )
    empty = _log(pia, deployed.versions[0], [])

    assert oversized.status_code == 422 and oversized.json()["field"] == "records"
    assert unknown_version.status_code == 404 and unknown_model.status_code == 404
    assert empty.status_code == 422
    assert deployed.services.ledger.position() == before
    served = pia.predict(MODEL, features_of(credit_rows(1, seed=207)[0]), request_id="served-then-logged")
    replay_records = _records(credit_rows(1, seed=207), "x")
    replay_records[0]["request_id"] = "served-then-logged"
    replay = _log(pia, deployed.versions[0], replay_records)
    assert replay.status_code == 409
    assert deployed.services.ledger.position() == served["position"]


def test_only_predictors_and_admins_may_log(deployed: Deployed) -> None:
    audrey = deployed.world.people["audrey"].client

    answer = _log(audrey, deployed.versions[0], _records(credit_rows(1, seed=208), "auditor"))

    assert answer.status_code == 403


def test_logged_inputs_of_an_erased_subject_cannot_be_read_and_the_export_verifies(
    deployed: Deployed, tmp_path: Path
) -> None:
    world = deployed.world
    pia, audrey, admin = world.people["pia"].client, world.people["audrey"].client, world.admin
    rows = credit_rows(2, seed=209)
    records = _records(rows, "subject-logged", subject_id="subject-logged-1")
    records[0]["reason_codes"] = [{"feature": "income", "contribution": 0.7}]
    logged = _log(pia, deployed.versions[0], records).json()
    pid = logged["predictions"][0]["prediction_id"]
    seen = audrey.decision(pid, min_position=logged["position"])
    assert seen["input"] == features_of(rows[0]) and seen["reason_codes"][0]["value"] == rows[0]["income"]

    erased = admin.erase_subject("subject-logged-1", "Art. 17 request 2026-201")
    after = audrey.decision(pid, min_position=erased.position)
    refused = _log(pia, deployed.versions[0], _records(rows[:1], "after-erasure", subject_id="subject-logged-1"))

    assert after["input"] is None and after["input_erased"]
    assert all("value" not in code for code in after["reason_codes"])
    assert refused.status_code == 409
    raw = deployed.services.ledger.recorder.select_events(__import__("uuid").UUID(pid), limit=1)[0].state.decode()
    assert str(rows[0]["income"]) not in raw

    deployed.services.runner.catch_up()
    created = audrey.create_export(MODEL, predictions="all")
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(audrey.download_export(created["id"]))
    summary = verify_bundle(bundle)
    assert summary.events == created["events"]
    with zipfile.ZipFile(bundle) as archive:
        lines = archive.read("events.jsonl").decode().splitlines()
    mine = [line for line in lines if pid in line]
    assert mine and "mlledger.prediction.Logged.v1" in mine[0]


def test_drift_is_detected_on_a_shifted_window_of_logged_predictions(deployed: Deployed) -> None:
    pia, olivia = _pia(deployed), deployed.world.people["olivia"].client
    shifted = _records(credit_rows(300, seed=210, income_shift=45_000), "shifted-logged")

    assert _log(pia, deployed.versions[0], shifted).status_code == 201
    deployed.services.runner.catch_up()
    checked = olivia.check_drift(MODEL, window=300)

    assert checked["window"]["predictions"] == 300
    assert checked["comparison"]["drifted"] is True
    assert "income" in checked["comparison"]["drifted_features"]
    view = deployed.world.people["audrey"].client.monitoring(MODEL)
    assert any(v["version"] == deployed.versions[0] and v["predictions"] >= 300 for v in view["versions"])
    assert set(FEATURES) >= set(checked["comparison"]["drifted_features"])


def test_the_console_shows_a_logged_decision_as_made_elsewhere(deployed: Deployed) -> None:
    import re

    audrey = deployed.world.people["audrey"].client
    logged = _log(_pia(deployed), deployed.versions[0], _records(credit_rows(1, seed=211), "console-logged")).json()
    deployed.services.runner.catch_up()
    browser = TestClient(deployed.world.http.app, follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/console/login").text)
    assert token is not None
    key = audrey.headers["Authorization"].removeprefix("Bearer ")
    signed_in = browser.post("/console/login", data={"api_key": key, "csrf_token": token.group(1)})
    assert signed_in.status_code == 303

    page = browser.get("/console/decisions", params={"prediction_id": logged["predictions"][0]["prediction_id"]})

    assert page.status_code == 200
    assert "by another serving stack" in page.text
