"""Serving through the API: routing, shadows, canaries, reason codes, bad input, overrides,
outcomes, erasure and the reconstructed decision, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.ledger import drop_schema, make_settings, require_postgres, run_cli
from support.serving_world import FEATURES, MODEL, Deployed, credit_csv, credit_rows, deploy_world, features_of

from domain.credentials import api_key_id, key_digest
from domain.errors import InvalidPayload, LedgerError, NotFound, Unauthenticated, VersionConflict
from domain.model import ModelVersion
from domain.permissions import Action
from domain.run import Run
from domain.subject import Subject
from mlledger.client import LedgerClientError
from projections.predictions import predictions
from projections.registry_queries import deployment, serving_versions
from service.app import create_app
from service.application.auth import authorize_digest
from service.bootstrap import open_services
from service.common.freshness import Remembered
from service.serving.batching import WriterStopped
from service.serving.models import ModelCache
from service.serving.predict import PredictRecord, Served
from service.serving.predict_queue import PredictQueue
from service.serving.runtime import preload_served


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if request.param == "postgres":
        require_postgres()
    settings = make_settings(
        request.param, Path(tmp_path_factory.mktemp("serving")) / "data", max_batch_rows=2500, max_json_bytes=2_000_000
    )
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_workers=False, services=services)) as http:
            world = deploy_world(http, services, seeds=[1, 2, 3])
            services.runner.catch_up()
            http.app.state.serving.reports.run_once()  # type: ignore[attr-defined]
            services.runner.catch_up()
            yield world
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)


def _ledger_size(deployed: Deployed) -> int:
    return deployed.services.ledger.position()


def test_a_prediction_comes_from_the_champion_with_its_top_reasons(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    row = credit_rows(1, seed=99)[0]

    answer = pia.predict(MODEL, features_of(row), request_id="loan-1")

    assert answer["version"] == deployed.versions[0]
    assert answer["output"]["label"] in (0, 1)
    assert 0.0 <= answer["output"]["probability"] <= 1.0
    codes = answer["reason_codes"]
    assert 1 <= len(codes) <= 4 and {c["feature"] for c in codes} <= set(FEATURES)
    magnitudes = [abs(c["contribution"]) for c in codes]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert {c["feature"]: c["value"] for c in codes} == {c["feature"]: row[c["feature"]] for c in codes}


def test_a_request_id_replayed_with_another_input_is_refused_and_not_recorded_twice(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    pia.predict(MODEL, features_of(credit_rows(1, seed=5)[0]), request_id="once-only")
    before = _ledger_size(deployed)

    with pytest.raises(LedgerClientError) as refused:
        pia.predict(MODEL, features_of(credit_rows(1, seed=6)[0]), request_id="once-only")

    assert refused.value.status == 409
    assert _ledger_size(deployed) == before


def test_a_retried_prediction_whose_first_try_was_recorded_gets_the_recorded_answer(deployed: Deployed) -> None:
    world = deployed.world
    pia = world.people["pia"].client
    row = features_of(credit_rows(1, seed=7)[0])
    first = pia.predict(MODEL, row, request_id="retried-once")
    subject_first = pia.predict(MODEL, row, request_id="retried-subject", subject_id="subject-retry")

    again = pia.transport.send("POST", f"/v1/models/{MODEL}/predict", json={"input": row, "request_id": "retried-once"})
    subject_again = pia.predict(MODEL, row, request_id="retried-subject", subject_id="subject-retry")
    with pytest.raises(LedgerClientError) as not_theirs:  # the same request id and input from someone else
        world.admin.predict(MODEL, row, request_id="retried-once")
    with pytest.raises(LedgerClientError) as other_subject:
        pia.predict(MODEL, row, request_id="retried-subject", subject_id="subject-other")

    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    replayed = again.json()
    for field in ("prediction_id", "request_id", "model_name", "version", "output", "reason_codes"):
        assert replayed[field] == first[field], field
    assert replayed["position"] >= first["position"]
    assert subject_again["prediction_id"] == subject_first["prediction_id"]
    assert subject_again["reason_codes"] == subject_first["reason_codes"]  # values decrypted as first answered
    assert not_theirs.value.status == 409 and other_subject.value.status == 409
    for recorded in (first, subject_first):  # nothing recorded twice
        assert len(deployed.services.ledger.recorder.select_events(uuid.UUID(recorded["prediction_id"]))) == 1


class _AnswerLostOnce:
    """An HTTP client whose first request to a path ending in ``suffix`` reaches the service but whose
    answer is lost on the way back."""

    def __init__(self, http: Any, suffix: str = "/predict") -> None:
        self.http, self.suffix, self.lost = http, suffix, 0

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if path.endswith(self.suffix) and not self.lost:
            self.lost += 1
            raise httpx.ReadError("the connection dropped before the answer arrived")
        return response


def test_the_sdk_retrying_a_prediction_whose_answer_was_lost_gets_the_one_recorded(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    row = features_of(credit_rows(1, seed=8)[0])
    plain = pia.transport.http
    lossy = pia.transport.http = _AnswerLostOnce(plain)
    try:
        answer = pia.predict(MODEL, row, request_id="answer-lost")
    finally:
        pia.transport.http = plain

    assert lossy.lost == 1  # the first answer was lost: this one came from the retry
    made = deployed.services.ledger.recorder.select_events(uuid.UUID(answer["prediction_id"]))
    assert len(made) == 1  # recorded by the first try, not again by the retry (the id is the request id's)
    assert answer["request_id"] == "answer-lost" and answer["output"]["label"] in (0, 1)


def test_a_retried_batch_whose_first_try_was_recorded_gets_the_recorded_answers(deployed: Deployed) -> None:
    world = deployed.world
    pia = world.people["pia"].client
    rows = [features_of(r) for r in credit_rows(3, seed=9)]
    records = [{"input": row, "request_id": f"batch-retry-{i}"} for i, row in enumerate(rows)]
    records[1]["subject_id"] = "subject-batch-retry"
    first = pia.predict_batch(MODEL, records)
    size = _ledger_size(deployed)
    url = f"/v1/models/{MODEL}/predict:batch"

    again = pia.transport.send("POST", url, json={"records": records})
    partly_new = pia.transport.send(
        "POST", url, json={"records": [*records[:2], {"input": rows[2], "request_id": "new"}]}
    )
    other_input = pia.transport.send("POST", url, json={"records": [records[0], {**records[1], "input": rows[0]}]})
    not_theirs = world.admin.transport.send("POST", url, json={"records": records})
    without_ids = pia.transport.send("POST", url, json={"records": [records[0], {"input": rows[1]}]})

    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    for replayed, made in zip(again.json()["predictions"], first["predictions"], strict=True):
        for field in ("prediction_id", "request_id", "model_name", "version", "output", "reason_codes"):
            assert replayed[field] == made[field], field
    for refused in (partly_new, other_input, not_theirs, without_ids):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert _ledger_size(deployed) == size  # nothing recorded twice, nothing of the refused batches


def test_the_sdk_retrying_a_batch_whose_answer_was_lost_gets_the_one_recorded(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    records = [
        {"input": features_of(r), "request_id": f"batch-lost-{i}"} for i, r in enumerate(credit_rows(2, seed=10))
    ]
    plain = pia.transport.http
    lossy = pia.transport.http = _AnswerLostOnce(plain, "/predict:batch")
    try:
        answer = pia.predict_batch(MODEL, records)
        with pytest.raises(httpx.ReadError):  # without request ids a lost batch is not retried
            lossy.lost = 0
            pia.predict_batch(MODEL, [{"input": record["input"]} for record in records])
    finally:
        pia.transport.http = plain

    assert [p["request_id"] for p in answer["predictions"]] == ["batch-lost-0", "batch-lost-1"]
    for made in answer["predictions"]:
        assert len(deployed.services.ledger.recorder.select_events(uuid.UUID(made["prediction_id"]))) == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"input": {"age": 30, "income": 50_000}}, "records.0.input.debt"),
        ({"input": {"age": 30, "income": 50_000, "debt": 1, "zip": "X"}}, "records.0.input.zip"),
        ({"input": {"age": "thirty", "income": 50_000, "debt": 1}}, "records.0.input.age"),
        ({"input": {"age": True, "income": 50_000, "debt": 1}}, "records.0.input.age"),
        ({"input": {"age": None, "income": 50_000, "debt": 1}}, "records.0.input.age"),
    ],
)
def test_bad_records_are_refused_naming_the_field_and_nothing_is_recorded(
    deployed: Deployed, record: dict[str, object], field: str
) -> None:
    pia = deployed.world.people["pia"].client
    before = _ledger_size(deployed)

    with pytest.raises(LedgerClientError) as refused:
        pia.predict_batch(MODEL, [{"input": features_of(credit_rows(1, seed=1)[0])}, record][::-1])

    assert refused.value.status == 422
    assert refused.value.field == field
    assert refused.value.problem["type"] and refused.value.problem["title"]
    assert _ledger_size(deployed) == before


def test_nan_empty_oversized_and_unknown_are_refused(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    http = pia.http
    before = _ledger_size(deployed)
    raw = '{"input": {"age": NaN, "income": 1, "debt": 1}}'
    nan = http.post(
        f"/v1/models/{MODEL}/predict", content=raw, headers={**pia.headers, "content-type": "application/json"}
    )
    assert nan.status_code == 422 and nan.headers["content-type"].startswith("application/problem+json")
    assert "age" in nan.json()["field"]
    batch_url = f"/v1/models/{MODEL}/predict:batch"
    json_headers = {**pia.headers, "content-type": "application/json"}
    nan_in_batch = http.post(batch_url, content='{"records": [' + raw + "]}", headers=json_headers)
    assert nan_in_batch.status_code == 422 and "age" in nan_in_batch.json()["field"]
    not_json = http.post(batch_url, content='{"records": [', headers=json_headers)
    assert not_json.status_code == 422
    assert not_json.headers["content-type"].startswith("application/problem+json")
    extra = http.post(batch_url, content='{"records": [], "colour": "blue"}', headers=json_headers)
    assert extra.status_code == 422 and extra.json()["field"] == "colour"

    with pytest.raises(LedgerClientError) as empty:
        pia.predict_batch(MODEL, [])
    assert empty.value.status == 422 and empty.value.field == "records"

    too_many = [{"input": features_of(r)} for r in credit_rows(2501, seed=3)]
    with pytest.raises(LedgerClientError) as oversized:
        pia.predict_batch(MODEL, too_many)
    assert oversized.value.status == 422 and oversized.value.field == "records"

    with pytest.raises(LedgerClientError) as unknown:
        pia.predict("no-such-model", features_of(credit_rows(1, seed=1)[0]))
    assert unknown.value.status == 404

    with pytest.raises(LedgerClientError) as no_version:
        deployed.world.people["audrey"].client.report(MODEL, 99, "explanations")
    assert no_version.value.status == 404
    assert _ledger_size(deployed) == before


def test_canary_share_and_challenger_shadows_over_2000_requests(deployed: Deployed) -> None:
    olivia = deployed.world.people["olivia"].client
    pia = deployed.world.people["pia"].client
    champion, canary, challenger = deployed.versions
    olivia.deploy(MODEL, "canary", canary, share=0.25)
    olivia.deploy(MODEL, "challenger", challenger)
    try:
        rows = credit_rows(2000, seed=21)
        served = []
        for start in range(0, 2000, 250):
            chunk = rows[start : start + 250]
            batch = [{"input": features_of(r), "request_id": f"canary-{start + i}"} for i, r in enumerate(chunk)]
            served.extend(pia.predict_batch(MODEL, batch)["predictions"])
    finally:
        olivia.deploy(MODEL, "canary", None)
        olivia.deploy(MODEL, "challenger", None)

    versions = [p["version"] for p in served]
    assert set(versions) <= {champion, canary}
    on_canary = versions.count(canary)
    assert abs(on_canary - 500) < 4.5 * (2000 * 0.25 * 0.75) ** 0.5  # within 4.5 binomial standard deviations
    services = deployed.services
    services.runner.catch_up()
    with services.engine.connect() as conn:
        shadows = conn.execute(
            sa.select(predictions.c.prediction_id, predictions.c.shadow_of, predictions.c.number).where(
                predictions.c.role == "challenger", predictions.c.request_id.like("canary-%")
            )
        ).all()
    returned = {p["prediction_id"] for p in served}
    assert len(shadows) == 2000 and {s.number for s in shadows} == {challenger}
    assert {s.shadow_of for s in shadows} == returned
    assert not returned & {s.prediction_id for s in shadows}


def test_a_stopped_deployment_refuses_with_the_reason(deployed: Deployed) -> None:
    olivia = deployed.world.people["olivia"].client
    pia = deployed.world.people["pia"].client
    olivia.deploy(MODEL, "stop", reason="incident 42: score drift under review")
    before = _ledger_size(deployed)
    try:
        with pytest.raises(LedgerClientError) as refused:
            pia.predict(MODEL, features_of(credit_rows(1, seed=8)[0]))
        after = _ledger_size(deployed)
    finally:
        olivia.deploy(MODEL, "resume", reason="incident 42 closed")
    assert refused.value.status == 503
    assert "incident 42" in refused.value.problem["detail"]
    assert after == before
    assert pia.predict(MODEL, features_of(credit_rows(1, seed=8)[0]))["version"] == deployed.versions[0]


def test_override_outcome_and_the_reconstructed_decision(deployed: Deployed) -> None:
    world = deployed.world
    pia, olivia, audrey = (world.people[n].client for n in ("pia", "olivia", "audrey"))
    answer = pia.predict(MODEL, features_of(credit_rows(1, seed=31)[0]), request_id="loan-override")
    pid = answer["prediction_id"]
    flipped = {"label": 1 - answer["output"]["label"]}
    olivia.override(pid, flipped, "income verified by phone; the model had a stale figure")
    written = pia.record_outcome(pid, flipped["label"])

    decision = audrey.decision("loan-override", min_position=written.position)

    assert decision["prediction_id"] == pid
    assert decision["input"] == features_of(credit_rows(1, seed=31)[0])
    assert decision["output"] == answer["output"]
    assert decision["final_decision"] == flipped
    assert decision["overrides"][0]["reason"].startswith("income verified")
    assert decision["outcome"] == flipped["label"] and decision["has_outcome"]
    assert decision["lineage"]["version"]["number"] == deployed.versions[0]
    assert len(decision["lineage"]["approvals"]) == 2
    assert decision["champion_at_time"]["number"] == deployed.versions[0]
    with pytest.raises(LedgerClientError) as twice:
        pia.record_outcome(pid, 0)
    assert twice.value.status == 409


def test_an_erased_subject_cannot_be_read_anywhere_and_the_ledger_still_verifies(deployed: Deployed) -> None:
    world = deployed.world
    pia, audrey, admin = world.people["pia"].client, world.people["audrey"].client, world.admin
    row = features_of(credit_rows(1, seed=41)[0])
    answer = pia.predict(MODEL, row, request_id="subject-loan", subject_id="subject-7")
    seen = audrey.decision(answer["prediction_id"], min_position=answer["position"])
    assert seen["input"] == row and not seen["input_erased"]
    assert all("value" in code for code in seen["reason_codes"])

    erased = admin.erase_subject("subject-7", "Art. 17 request 2026-118")
    after = audrey.decision(answer["prediction_id"], min_position=erased.position)

    assert after["input"] is None and after["input_erased"]
    assert all("value" not in code for code in after["reason_codes"])
    with pytest.raises(LedgerClientError) as refused:
        pia.predict(MODEL, row, subject_id="subject-7")
    assert refused.value.status == 409
    raw = deployed.services.ledger.recorder.select_events(__import__("uuid").UUID(answer["prediction_id"]), limit=1)[
        0
    ].state.decode()
    assert str(row["income"]) not in raw and json.dumps(row) not in raw
    result = run_cli(deployed.services.settings, "verify")
    assert result.returncode == 0, result.stdout + result.stderr


def test_reports_explain_the_model_and_measure_fairness(deployed: Deployed) -> None:
    audrey = deployed.world.people["audrey"].client
    explanations = audrey.report(MODEL, deployed.versions[0], "explanations")
    fairness = audrey.report(MODEL, deployed.versions[0], "fairness")

    summary = explanations["summary"]
    assert summary["explainer"] == "tree"
    importance = [f["mean_abs_shap"] for f in summary["mean_abs_shap"]]
    assert {f["feature"] for f in summary["mean_abs_shap"]} == set(FEATURES)
    assert importance == sorted(importance, reverse=True) and importance[0] > 0
    assert set(explanations["attachments"]) == {"bar.png", "beeswarm.png", "report.html"}
    html = audrey.http.get(
        f"/v1/models/{MODEL}/versions/{deployed.versions[0]}/explanations",
        params={"format": "html"},
        headers=audrey.headers,
    )
    assert html.status_code == 200 and "income" in html.text
    assert [a["name"] for a in fairness["summary"]["attributes"]] == ["sex"]


def _serve(deployed: Deployed, rows: list[dict[str, object]], prefix: str) -> int:
    pia = deployed.world.people["pia"].client
    answer = pia.predict_batch(
        MODEL, [{"input": features_of(r), "request_id": f"{prefix}-{i}"} for i, r in enumerate(rows)]
    )
    return int(answer["position"])


def test_drift_is_detected_on_a_shifted_window_and_not_on_an_unshifted_one(deployed: Deployed) -> None:
    olivia, audrey = deployed.world.people["olivia"].client, deployed.world.people["audrey"].client
    deployed.services.runner.catch_up()

    _serve(deployed, credit_rows(300, seed=51), "steady")
    deployed.services.runner.catch_up()
    steady = olivia.check_drift(MODEL, window=300)
    assert steady["comparison"]["drifted"] is False and steady["alert_position"] is None
    assert steady["window"]["predictions"] == 300

    newer = deployed.world.people["alice"].client.upload_dataset("credit", credit_csv(rows=300, seed=77))
    deployed.world.admin.request(
        "PUT", f"/v1/models/{MODEL}/policy", json={"min_impact_ratio": None, "retrain_on_drift": True}
    )
    _serve(deployed, credit_rows(300, seed=52, income_shift=45_000), "shifted")
    deployed.services.runner.catch_up()
    shifted = olivia.check_drift(MODEL, window=300)

    assert shifted["comparison"]["drifted"] is True
    drifted = shifted["comparison"]["drifted_features"]
    assert "income" in drifted and "age" not in drifted
    assert shifted["comparison"]["features"]["income"]["psi"] > 0.2
    view = audrey.monitoring(MODEL, min_position=shifted["alert_position"])
    (alert,) = [a for a in view["drift_alerts"] if a["position"] == shifted["alert_position"]]
    assert alert["version"] == deployed.versions[0] and "income" in alert["drifted_features"]
    assert alert["window"]["to_position"] > alert["window"]["from_position"]
    retraining = deployed.services.ledger.get(shifted["retraining_run_id"], Run)
    assert retraining.dataset_version_ids == [newer.id] and retraining.status == "requested"
    assert alert["retraining_run_id"] == shifted["retraining_run_id"]


def test_the_drift_window_decrypts_subjects_inputs_and_skips_erased_ones(deployed: Deployed) -> None:
    world = deployed.world
    pia, olivia = world.people["pia"].client, world.people["olivia"].client
    records = [
        {"input": features_of(row), "request_id": f"window-{i}"} | ({"subject_id": f"window-{i % 4}"} if i < 20 else {})
        for i, row in enumerate(credit_rows(40, seed=91))
    ]
    pia.predict_batch(MODEL, records)
    world.admin.erase_subject("window-0", "Art. 17 request 2026-131")  # records 0, 4, 8, 12 and 16
    deployed.services.runner.catch_up()

    checked = olivia.check_drift(MODEL, window=40)

    assert checked["window"]["predictions"] == 35 and checked["window"]["skipped_erased"] == 5
    assert checked["comparison"]["features"]["income"]["psi"] >= 0


def test_live_accuracy_follows_recorded_outcomes(deployed: Deployed) -> None:
    pia, audrey = deployed.world.people["pia"].client, deployed.world.people["audrey"].client
    rows = credit_rows(40, seed=61)
    answer = pia.predict_batch(MODEL, [{"input": features_of(r), "request_id": f"acc-{i}"} for i, r in enumerate(rows)])
    right = 0
    position = 0
    for i, served in enumerate(answer["predictions"]):
        truth = served["output"]["label"] if i < 30 else 1 - served["output"]["label"]
        right += truth == served["output"]["label"]
        position = pia.record_outcome(served["prediction_id"], truth).position

    view = audrey.monitoring(MODEL, min_position=position, window=1000)

    t = predictions
    with deployed.services.engine.connect() as conn:
        flags = conn.execute(
            sa.select(t.c.request_id, t.c.correct).where(
                t.c.number == deployed.versions[0], t.c.role != "challenger", t.c.outcome_position.is_not(None)
            )
        ).all()
    mine = {r.request_id: r.correct for r in flags if r.request_id.startswith("acc-")}
    assert mine == {f"acc-{i}": i < 30 for i in range(40)}
    (window,) = [w for w in view["live_accuracy"] if w["version"] == deployed.versions[0]]
    assert window["outcomes"] == len(flags)
    assert window["accuracy"] == pytest.approx(sum(r.correct for r in flags) / len(flags))
    served_rows = [v for v in view["versions"] if v["version"] == deployed.versions[0] and v["role"] == "served"]
    assert served_rows[0]["outcomes"] >= 40
    assert served_rows[0]["latency_ms_p95"] is not None


def test_the_predictions_read_models_rebuild_to_identical_rows(deployed: Deployed) -> None:
    from projections.predictions import Predictions

    services = deployed.services
    services.runner.catch_up()
    tables = Predictions.tables

    def rows() -> dict[str, list[tuple[object, ...]]]:
        with services.engine.connect() as conn:
            return {t.name: sorted(tuple(r) for r in conn.execute(sa.select(t))) for t in tables}

    before = rows()
    assert before["predictions"] and before["model_reports"] and before["subjects"]
    services.runner.rebuild("predictions")
    assert rows() == before


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(deployed: Deployed) -> None:
    pia = deployed.world.people["pia"].client
    limit = deployed.services.settings.max_json_bytes
    before = _ledger_size(deployed)
    big = '{"records": [' + ",".join(['{"input": {"age": 1, "income": 2, "debt": 3}}'] * (limit // 40)) + "]}"

    url, headers = f"/v1/models/{MODEL}/predict:batch", {**pia.headers, "content-type": "application/json"}
    declared = pia.http.post(url, content=big, headers=headers)

    def chunks() -> Iterator[bytes]:
        data = big.encode()
        for start in range(0, len(data), 65_536):
            yield data[start : start + 65_536]

    streamed = pia.http.post(url, content=chunks(), headers=headers)
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "MLLEDGER_MAX_JSON_BYTES" in answer.json()["detail"]
    assert _ledger_size(deployed) == before


def test_concurrent_single_requests_are_served_together_and_each_fails_alone(deployed: Deployed) -> None:
    serving = deployed.world.http.app.state.serving  # type: ignore[attr-defined]
    ledger = deployed.services.ledger
    digest = key_digest(deployed.world.issue_key(deployed.world.people["pia"].id, label="queue test"))
    gate, entered = threading.Event(), threading.Event()

    def authorize(asked: str, remembered: Remembered) -> str:
        entered.set()
        assert gate.wait(30)  # the first batch holds the thread until every other request is queued
        return authorize_digest(ledger, asked, Action.PREDICT, remembered).actor

    queue = PredictQueue(serving.predictor, ledger, authorize)
    rows = [features_of(row) for row in credit_rows(8, seed=77)]
    asked = [
        (MODEL, PredictRecord(rows[0], request_id="q-first"), digest),
        *[(MODEL, PredictRecord(rows[k], request_id=f"q-{k}"), digest) for k in range(1, 6)],
        (MODEL, PredictRecord({"age": 30, "income": 1}, request_id="q-missing"), digest),
        ("no-such-model", PredictRecord(rows[6], request_id="q-unknown"), digest),
        (MODEL, PredictRecord(rows[6], request_id="q-twice"), digest),
        (MODEL, PredictRecord(rows[7], request_id="q-twice"), digest),
        (MODEL, PredictRecord(rows[7], request_id="q-stranger"), key_digest("mll_" + "not-a-key" * 4)),
    ]
    before = _ledger_size(deployed)

    async def ask_all() -> list[object]:
        first = asyncio.ensure_future(queue.predict(*asked[0]))
        assert await asyncio.to_thread(entered.wait, 30)
        rest = [asyncio.ensure_future(queue.predict(*one)) for one in asked[1:]]
        await asyncio.sleep(0)  # every request is on the queue now
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        answers = asyncio.run(ask_all())
    finally:
        queue.stop()

    assert (queue.batches, queue.requests) == (2, len(asked))  # the first alone, then all the others at once
    served = {a.request_id: a for a in answers if isinstance(a, Served)}
    assert set(served) >= {"q-first", "q-1", "q-2", "q-3", "q-4", "q-5"}
    assert isinstance(answers[6], InvalidPayload) and answers[6].field == "records.0.input.debt"
    assert isinstance(answers[7], NotFound)
    twice = answers[8:10]
    assert sum(isinstance(a, Served) for a in twice) == 1 and sum(isinstance(a, LedgerError) for a in twice) == 1
    assert isinstance(answers[10], Unauthenticated)
    deployed.services.runner.catch_up()
    with deployed.services.engine.connect() as conn:
        recorded = conn.execute(
            sa.select(predictions.c.prediction_id, predictions.c.request_id).where(predictions.c.request_id.like("q-%"))
        ).all()
    assert {(r.request_id, r.prediction_id) for r in recorded} == {(k, a.prediction_id) for k, a in served.items()}
    assert _ledger_size(deployed) == max(a.position for a in served.values()) > before
    with pytest.raises(WriterStopped):
        asyncio.run(queue.predict(*asked[1]))


def test_a_serving_process_freezes_what_loading_a_model_built(deployed: Deployed) -> None:
    services = deployed.services
    version_id = ModelVersion.create_id(model_name=MODEL, number=deployed.versions[0])
    version = services.ledger.get(version_id, ModelVersion)
    plain, serving = ModelCache(services.ledger, services.blobs), ModelCache(services.ledger, services.blobs)
    serving.freeze_loaded = True
    gc.unfreeze()
    try:
        plain.get(version)
        assert gc.get_freeze_count() == 0
        served = serving.get(version)
        assert gc.get_freeze_count() > 0 and gc.is_tracked(served.model)
        assert not any(obj is served.model for obj in gc.get_objects())  # no collection walks it again
    finally:
        gc.unfreeze()


def test_a_serving_process_preloads_what_its_live_deployments_serve(
    deployed: Deployed, caplog: pytest.LogCaptureFixture
) -> None:
    services = deployed.services
    services.runner.catch_up()
    with services.engine.connect() as conn:
        expected = serving_versions(conn)[:8]
        live = deployment(conn, MODEL)
    assert live is not None and expected[0] == live.champion_version_id
    cache = ModelCache(services.ledger, services.blobs)

    preload_served(services, cache)

    assert sorted(cache.loaded()) == sorted(expected)
    champion = services.ledger.get(expected[0], ModelVersion)
    before = cache.loaded()
    assert cache.get(champion) is cache.get(champion) and cache.loaded()[-1] == expected[0]
    assert sorted(cache.loaded()) == sorted(before)  # served from the cache, nothing loaded again
    with caplog.at_level("WARNING"):
        assert cache.preload([str(uuid.uuid4())]) == 0
    assert "was not preloaded" in caplog.text


def test_the_single_record_endpoint_checks_key_name_and_content_type_before_reading_the_body(
    deployed: Deployed,
) -> None:
    pia = deployed.world.people["pia"].client
    http, url = pia.http, f"/v1/models/{MODEL}/predict"
    good = json.dumps({"input": features_of(credit_rows(1, seed=12)[0])})
    json_type = {"content-type": "application/json"}
    before = _ledger_size(deployed)

    stranger = http.post(url, content="{broken", headers={"Authorization": "Bearer mll_" + "x" * 40, **json_type})
    auditor = deployed.world.people["audrey"].client
    not_allowed = http.post(url, content="{broken", headers={**auditor.headers, **json_type})
    plain_text = http.post(url, content=good, headers={**pia.headers, "content-type": "text/plain"})
    long_name = http.post(f"/v1/models/{'m' * 201}/predict", content=good, headers={**pia.headers, **json_type})
    broken = http.post(url, content="{broken", headers={**pia.headers, **json_type})

    assert stranger.status_code == 401 and not_allowed.status_code == 403
    assert plain_text.status_code == 422 and plain_text.json()["field"] == "body"
    assert long_name.status_code == 422 and long_name.json()["field"] == "name"
    assert broken.status_code == 422 and broken.headers["content-type"].startswith("application/problem+json")
    assert _ledger_size(deployed) == before
    answered = http.post(url, content=good, headers={**pia.headers, "content-type": "application/json; charset=utf-8"})
    assert answered.status_code == 200 and answered.headers["X-Ledger-Position"] == str(answered.json()["position"])


def test_a_failed_request_cannot_take_the_new_subject_key_a_request_beside_it_uses(deployed: Deployed) -> None:
    world, ledger = deployed.world, deployed.services.ledger
    pia, audrey = world.people["pia"].client, world.people["audrey"].client
    rows = [features_of(row) for row in credit_rows(3, seed=83)]
    pia.predict(MODEL, rows[0], request_id="subject-twice-used")
    digest = key_digest(world.issue_key(world.people["pia"].id, label="subject test"))
    gate, entered = threading.Event(), threading.Event()

    def authorize(asked: str, remembered: Remembered) -> str:
        entered.set()
        assert gate.wait(30)
        return authorize_digest(ledger, asked, Action.PREDICT, remembered).actor

    queue = PredictQueue(world.http.app.state.serving.predictor, ledger, authorize)  # type: ignore[attr-defined]

    async def ask_both() -> list[object]:
        first = asyncio.ensure_future(queue.predict(MODEL, PredictRecord(rows[1], request_id="subject-hold"), digest))
        assert await asyncio.to_thread(entered.wait, 30)
        # In one batch: the first issues the new subject's key but fails (its request id is taken) ...
        replayed = PredictRecord(rows[1], request_id="subject-twice-used", subject_id="subject-shared")
        # ... and the second, for the same subject, must not be left with a destroyed key.
        beside = PredictRecord(rows[2], request_id="subject-beside", subject_id="subject-shared")
        both = [asyncio.ensure_future(queue.predict(MODEL, record, digest)) for record in (replayed, beside)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, *both, return_exceptions=True)

    try:
        held, replayed, beside = asyncio.run(ask_both())
    finally:
        queue.stop()

    assert isinstance(held, Served) and isinstance(replayed, VersionConflict)
    assert isinstance(beside, Served)
    seen = audrey.decision(beside.prediction_id, min_position=beside.position)
    assert seen["input"] == rows[2] and not seen["input_erased"]
    assert ledger.get(Subject.create_id(subject_id="subject-shared"), Subject)


def test_a_revoked_key_or_a_stopped_deployment_is_seen_by_the_next_single_request(deployed: Deployed) -> None:
    world = deployed.world
    olivia = world.people["olivia"].client
    token = world.issue_key(world.people["pia"].id, label="revoked soon")
    http, url = world.http, f"/v1/models/{MODEL}/predict"
    headers = {"Authorization": f"Bearer {token}"}
    body = {"input": features_of(credit_rows(1, seed=91)[0])}
    assert http.post(url, json=body, headers=headers).status_code == 200  # the key and deployment remembered

    olivia.deploy(MODEL, "stop", reason="an incident under review")
    try:
        stopped = http.post(url, json=body, headers=headers)
    finally:
        olivia.deploy(MODEL, "resume", reason="incident closed")
    assert stopped.status_code == 503 and "an incident under review" in stopped.json()["detail"]
    assert http.post(url, json=body, headers=headers).status_code == 200

    key_id = str(api_key_id(key_digest(token)))
    assert http.delete(f"/v1/api-keys/{key_id}", headers=world.admin.headers).status_code == 200
    assert http.post(url, json=body, headers=headers).status_code == 401
