"""The SDK as a data scientist uses it: runs as ``with`` blocks, typed results, configuration from
the environment, retries, read-your-writes, tags and descriptions, run search and comparison,
artifact download, cursor pagination, and a client-side check that a write is in the transparency log."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, make_world, train_and_register
from support.ledger import make_settings
from support.serving_world import MODEL as SERVED
from support.serving_world import Deployed, credit_rows, deploy_world, features_of

from domain.integrity.keys import Signer, public_key_pem
from mlledger import ChangePending, InclusionCheckFailed, LedgerClient, LedgerClientError, RunInfo
from mlledger.proofs import check_inclusion
from mlledger.results import (
    AccuracyWindow,
    ApprovalInfo,
    AuditEvent,
    AuditPage,
    ChampionAt,
    ChangeInfo,
    ChangeOutcome,
    DatasetVersionInfo,
    Decision,
    DeploymentChange,
    DriftCheckResult,
    ExportCreated,
    ExportInfo,
    Lineage,
    Manifest,
    ModelInfo,
    ModelVersionInfo,
    Monitoring,
    Prediction,
    PredictionBatch,
    Provenance,
    Report,
    VersionServing,
)
from projections import transparency_log as tlog
from service.app import create_app
from service.bootstrap import Services, open_services

MODEL = "credit-risk"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    opened = open_services(make_settings("sqlite", tmp_path / "data", read_wait_seconds=2.0), migrate=True)
    yield opened
    opened.close()


@pytest.fixture
def http(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as client:
        yield client


@pytest.fixture
def world(http: TestClient, services: Services) -> World:
    made = make_world(http)
    services.runner.catch_up()
    return made


@pytest.fixture
def live_world(services: Services) -> Iterator[World]:
    """A world whose projector runs in the background, as ``mlledger serve`` runs it."""
    with TestClient(create_app(services.settings, run_projector=True, services=services)) as client:
        yield make_world(client)


def alice(world: World) -> LedgerClient:
    return world.people["alice"].client


# -- runs as with blocks ----------------------------------------------------------------------


def test_a_run_in_a_with_block_succeeds_when_the_block_ends(world: World) -> None:
    client = alice(world)

    with client.start_run(name="baseline") as run:
        run.log_params({"max_depth": 3})
        run.log_metric("auc", 0.9)

    found = client.run(run.id)
    assert isinstance(found, RunInfo)
    assert (found.status, found.params, found.metric_points) == ("succeeded", {"max_depth": 3}, 1)


def test_a_run_in_a_with_block_fails_with_the_exception_which_propagates(world: World) -> None:
    client = alice(world)

    with pytest.raises(ZeroDivisionError), client.start_run(name="doomed") as run:
        run.log_params({"max_depth": 3})
        _ = 1 / 0

    found = client.run(run.id)
    assert found.status == "failed"
    assert found.finished


# -- configuration, retries -------------------------------------------------------------------


class Scripted(ThreadingHTTPServer):
    """A small real HTTP server that answers each request with the next (status, body) of a script."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        self.script = list(script)
        self.seen: list[tuple[str, str, str | None]] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("authorization")))
        status, body = self.server.script.pop(0) if len(self.server.script) > 1 else self.server.script[0]
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[Scripted]:
    server = Scripted(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


UNAVAILABLE = (503, {"title": "Service Unavailable", "status": 503, "detail": "read models are behind"})
ME = (200, {"id": "p-1", "name": "alice", "roles": ["data_scientist"]})


@pytest.mark.parametrize("scripted", [[ME]], indirect=True)
def test_the_client_takes_url_and_api_key_from_the_environment(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_URL", scripted.url)
    monkeypatch.setenv("MLLEDGER_API_KEY", "mll_from-the-environment")

    with LedgerClient() as client:
        me = client.me()

    assert (me.id, me.name) == ("p-1", "alice")
    assert scripted.seen == [("GET", "/v1/me", "Bearer mll_from-the-environment")]


@pytest.mark.parametrize("scripted", [[UNAVAILABLE, UNAVAILABLE, ME]], indirect=True)
def test_a_read_answered_503_is_retried_until_the_service_answers(scripted: Scripted) -> None:
    with LedgerClient(scripted.url, "mll_key", backoff=0.01) as client:
        me = client.me()

    assert me.name == "alice"
    assert [seen[:2] for seen in scripted.seen] == [("GET", "/v1/me")] * 3


@pytest.mark.parametrize("scripted", [[UNAVAILABLE]], indirect=True)
def test_retries_are_bounded(scripted: Scripted) -> None:
    with LedgerClient(scripted.url, "mll_key", retries=2, backoff=0.01) as client, pytest.raises(LedgerClientError):
        client.me()

    assert len(scripted.seen) == 3


@pytest.mark.parametrize("scripted", [[UNAVAILABLE, (201, {"id": "r-1", "position": 7})]], indirect=True)
def test_a_write_that_is_not_idempotent_is_not_sent_twice(scripted: Scripted) -> None:
    with LedgerClient(scripted.url, "mll_key", backoff=0.01) as client, pytest.raises(LedgerClientError) as caught:
        client.log_params("r-1", {"max_depth": 3})

    assert caught.value.status == 503
    assert len(scripted.seen) == 1


@pytest.mark.parametrize("scripted", [[UNAVAILABLE, (200, {"id": "r-1", "position": 7})]], indirect=True)
def test_an_idempotent_write_is_retried_after_503(scripted: Scripted) -> None:
    with LedgerClient(scripted.url, "mll_key", backoff=0.01) as client:
        written = client.set_run_tags("r-1", {"team": "risk"})

    assert (written.position, client.position, len(scripted.seen)) == (7, 7, 2)


def test_a_refused_connection_is_retried_then_raised() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with (
        LedgerClient(f"http://127.0.0.1:{port}", "k", retries=2, backoff=0.05) as client,
        pytest.raises(Exception, match="onnect"),
    ):
        client.me()

    assert time.monotonic() - started >= 0.05  # it waited before trying again


# -- read-your-writes ---------------------------------------------------------------------------


def test_a_client_reads_its_own_writes_without_passing_positions(world: World, services: Services) -> None:
    client = alice(world)
    run = client.start_run(name="just written")
    catch_up = threading.Timer(0.5, services.runner.catch_up)  # the projector runs late

    catch_up.start()
    listed = client.runs(limit=10)
    catch_up.join()

    assert client.position == run.position
    assert run.id in [r.id for r in listed]


def test_a_fresh_client_that_wrote_nothing_does_not_wait(world: World) -> None:
    reader = LedgerClient(api_key=world.people["audrey"].client.headers["Authorization"][7:], http=world.http)

    assert reader.position == 0
    assert isinstance(list(reader.models()), list)


# -- the transparency log ---------------------------------------------------------------------------


def _checkpoint(services: Services) -> None:
    services.runner.catch_up()
    with services.engine.begin() as conn:
        tlog.publish_checkpoint(conn, services.ledger.signer, services.settings.log_origin, datetime.now(UTC))


def test_a_write_is_shown_to_be_in_the_transparency_log(world: World, services: Services) -> None:
    key = public_key_pem(services.ledger.signer.public_key)
    client = LedgerClient(api_key=alice(world).headers["Authorization"][7:], http=world.http, ledger_public_key=key)
    written = client.start_run(name="logged").written
    _checkpoint(services)

    verified = client.verify_inclusion(written, timeout=5)

    assert verified.position == written.position
    assert verified.tree_size >= verified.leaf_index + 1


def test_a_tampered_receipt_or_proof_or_another_key_fails_the_check(world: World, services: Services) -> None:
    client = alice(world)
    written = client.start_run(name="logged").written
    _checkpoint(services)
    receipt = client.request("GET", f"/v1/receipts/{written.position}")
    proof = client.request("GET", "/v1/ledger/proofs/inclusion", params={"notification_id": written.position})
    key = services.ledger.signer.public_key
    assert check_inclusion(written, receipt, proof, key).position == written.position

    def tampered(document: dict[str, Any], change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(document)
        change(copied)
        return copied

    bad_proofs = [
        tampered(proof, lambda p: p.update(root_hash=hashlib.sha256(b"other").hexdigest())),
        tampered(proof, lambda p: p.update(leaf_index=p["leaf_index"] + 1)),
        tampered(proof, lambda p: p.update(checkpoint=None)),
    ]
    if proof["proof"]:
        bad_proofs.append(tampered(proof, lambda p: p["proof"].__setitem__(0, "00" * 32)))
    bad_receipts = [
        tampered(receipt, lambda r: r["envelope"]["payload"].update(name="rewritten")),
        tampered(receipt, lambda r: r.update(hash=hashlib.sha256(b"x").hexdigest())),
    ]
    for bad in bad_proofs:
        with pytest.raises(InclusionCheckFailed):
            check_inclusion(written, receipt, bad, key)
    for bad in bad_receipts:
        with pytest.raises(InclusionCheckFailed):
            check_inclusion(written, bad, proof, key)
    with pytest.raises(InclusionCheckFailed):
        check_inclusion(written, receipt, proof, Signer.generate().public_key)


def test_a_receipt_is_only_given_to_whoever_wrote_the_event(world: World) -> None:
    written = alice(world).start_run(name="mine").written

    with pytest.raises(LedgerClientError) as caught:
        world.people["bob"].client.request("GET", f"/v1/receipts/{written.position}")

    assert caught.value.status == 404


# -- pagination -------------------------------------------------------------------------------------


def test_cursor_pagination_walks_every_run_once_while_runs_are_added(world: World, services: Services) -> None:
    client = alice(world)
    created = {client.start_run(name=f"run-{i}").id for i in range(23)}
    services.runner.catch_up()

    seen: list[str] = []
    page = client.runs(limit=5)
    while True:
        seen.extend(r.id for r in page)
        client.start_run(name="added while paging")  # newer than every page: never in this walk
        services.runner.catch_up()
        if page.next_cursor is None:
            break
        page = client.runs(limit=5, cursor=page.next_cursor)

    assert len(seen) == len(set(seen))
    assert created <= set(seen)


def test_a_page_names_the_next_one_in_its_link_header_and_refuses_a_foreign_cursor(
    world: World, services: Services
) -> None:
    client = alice(world)
    for i in range(3):
        client.start_run(name=f"run-{i}")
    services.runner.catch_up()

    response = world.http.get("/v1/runs", params={"limit": 2}, headers=client.headers)
    cursor = response.headers["X-Next-Cursor"]
    refused = world.http.get("/v1/models", params={"cursor": cursor}, headers=client.headers)
    garbage = world.http.get("/v1/runs", params={"cursor": "not-a-cursor!"}, headers=client.headers)

    assert response.headers["Link"].endswith('rel="next"') and f"cursor={cursor}" in response.headers["Link"]
    assert (refused.status_code, refused.json()["field"]) == (422, "cursor")
    assert garbage.status_code == 422


def test_metric_history_and_model_versions_are_walked_page_by_page(live_world: World) -> None:
    client = alice(live_world)
    with client.start_run(name="long") as run:
        run.log_metrics([{"key": "loss", "value": 1 / (step + 1), "step": step} for step in range(30)])
    for _ in range(3):
        train_and_register(live_world, "alice", MODEL)

    points = list(client.metric_history(run.id, "loss", page_size=7))
    versions = list(client.model_versions(MODEL, page_size=2))

    assert [p.step for p in points] == list(range(30))
    assert [v.number for v in versions] == [1, 2, 3]


# -- tags, descriptions, search, comparison, artifacts -------------------------------------------------


def test_tags_and_descriptions_of_runs_datasets_and_model_versions(live_world: World) -> None:
    client = alice(live_world)
    number = train_and_register(live_world, "alice", MODEL)
    version = client.model_version(MODEL, number)
    dataset_id = client.run(version.run_id).dataset_version_ids[0]

    client.set_run_tags(version.run_id, {"team": "risk"})
    client.set_run_description(version.run_id, "baseline forest")
    client.set_dataset_tags(dataset_id, {"source": "bureau"})
    client.set_dataset_description(dataset_id, "2026 applications")
    client.set_model_version_tags(MODEL, number, {"reviewed": "yes"})
    tagged = client.set_model_version_description(MODEL, number, "first candidate")
    receipt = client.request("GET", f"/v1/receipts/{tagged.position}")

    run, dataset = client.run(version.run_id), client.dataset_version(dataset_id)
    listed = next(v for v in client.model_versions(MODEL) if v.number == number)
    assert (run.tags, run.description) == ({"team": "risk"}, "baseline forest")
    assert (dataset.tags, dataset.description) == ({"source": "bureau"}, "2026 applications")
    assert (client.model_version(MODEL, number).tags, listed.tags) == ({"reviewed": "yes"}, {"reviewed": "yes"})
    assert listed.description == "first candidate"
    assert receipt["envelope"]["type"] == "mlledger.modellabels.DescriptionSet.v1" and receipt["signature"]


def test_a_tag_needs_a_string_value(world: World) -> None:
    run = alice(world).start_run(name="r")

    with pytest.raises(LedgerClientError) as caught:
        alice(world).request("POST", f"/v1/runs/{run.id}/tags", json={"tags": {"team": 3}})

    assert caught.value.status == 422


def test_runs_are_searched_by_params_final_metrics_and_tags(live_world: World) -> None:
    client = alice(live_world)
    for depth, auc, team in ((3, 0.70, "risk"), (5, 0.85, "risk"), (5, 0.90, "fraud")):
        with client.start_run(name=f"d{depth}-{team}") as run:
            run.log_params({"max_depth": depth})
            run.log_metrics([{"key": "auc", "value": 0.5, "step": 0}, {"key": "auc", "value": auc, "step": 1}])
            run.set_tags({"team": team})

    found = list(client.search_runs("params.max_depth = '5' AND metrics.auc > 0.8 AND tags.team = 'risk'"))
    good = [r.name for r in client.search_runs("metrics.auc >= 0.85", page_size=1)]

    assert [r.name for r in found] == ["d5-risk"]
    assert sorted(good) == ["d5-fraud", "d5-risk"]
    with pytest.raises(LedgerClientError) as caught:
        client.runs(filter="metrics.auc >")
    assert caught.value.field == "filter"


def test_runs_are_compared_side_by_side(live_world: World) -> None:
    client = alice(live_world)
    first = train_and_register(live_world, "alice", MODEL, seed=1)
    second = train_and_register(live_world, "alice", MODEL, seed=2)
    runs = [client.model_version(MODEL, n).run_id for n in (first, second)]

    comparison = client.compare_runs(*runs)

    assert [r.id for r in comparison.runs] == runs
    assert comparison.runs[0].metrics == {"auc": pytest.approx(0.82)}
    assert comparison.differing_params == [] and comparison.differing_metrics == []
    assert comparison.same_code and not comparison.same_datasets  # the data differs by seed
    assert comparison.runs[0].code is not None and comparison.runs[0].code["commit"] == "a1b2c3d4e5f6"


def test_an_artifact_downloads_with_its_digest_checked(live_world: World, tmp_path: Path) -> None:
    client = alice(live_world)
    with client.start_run(name="with artifact") as run:
        digest = run.upload_artifact("weights.bin", b"\x00\x01weights")

    data = client.download_artifact(run.id, "weights.bin")
    saved = client.download_artifact(run.id, "weights.bin", tmp_path / "w.bin")

    assert data == b"\x00\x01weights" and digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert isinstance(saved, Path) and saved.read_bytes() == data
    with pytest.raises(LedgerClientError) as caught:
        client.download_artifact(run.id, "missing.bin")
    assert caught.value.status == 404


def test_exports_are_paged_like_every_other_list(live_world: World) -> None:
    train_and_register(live_world, "alice", MODEL)
    auditor = live_world.people["audrey"].client
    created = [auditor.create_export(MODEL)["id"] for _ in range(3)]

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        response = live_world.http.get("/v1/exports", params=params, headers=auditor.headers)
        seen.extend(e["id"] for e in response.json())
        if "X-Next-Cursor" not in response.headers:
            break
        params["cursor"] = response.headers["X-Next-Cursor"]

    assert seen == created
    listed = auditor.exports(page_size=1)
    assert [e.id for e in listed] == created and all(isinstance(e, ExportInfo) for e in listed)


# -- typed results of reads: predictions, decisions, audit, monitoring, reports, exports, changes ------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """One runner-trained version of the credit model, approved, champion, with its reports published."""
    settings = make_settings("sqlite", tmp_path_factory.mktemp("sdk-served") / "data", read_wait_seconds=2.0)
    opened = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_workers=False, services=opened)) as client:
            deployed = deploy_world(client, opened, seeds=[1])
            opened.runner.catch_up()
            client.app.state.serving.reports.run_once()  # type: ignore[attr-defined]
            opened.runner.catch_up()
            yield deployed
    finally:
        opened.close()


def test_predictions_and_decisions_are_typed(served: Deployed) -> None:
    pia, audrey = served.world.people["pia"].client, served.world.people["audrey"].client
    rows = credit_rows(3, seed=11)

    answer = pia.predict(SERVED, features_of(rows[0]), request_id="typed-1", subject_id="subject-1")
    batch = pia.predict_batch(SERVED, [{"input": features_of(row)} for row in rows[1:]])
    decision = audrey.decision("typed-1", min_position=batch.position)

    assert isinstance(answer, Prediction)
    assert (answer.request_id, answer.model_name, answer.version) == ("typed-1", SERVED, served.versions[0])
    assert answer.position > 0 and 0 <= answer.output["probability"] <= 1 and answer.reason_codes
    assert answer["prediction_id"] == answer.prediction_id  # the JSON reads as before
    assert isinstance(batch, PredictionBatch) and len(batch) == 2 and batch.position > answer.position
    assert all(isinstance(p, Prediction) and p.version == served.versions[0] for p in batch)
    assert isinstance(decision, Decision)
    assert (decision.prediction_id, decision.subject_id, decision.origin) == (
        answer.prediction_id,
        "subject-1",
        "served",
    )
    assert decision.input == features_of(rows[0]) and not decision.input_erased and not decision.has_outcome
    assert decision.output == answer.output and decision.final_decision
    assert isinstance(decision.champion_at_time, ChampionAt) and decision.champion_at_time.number == answer.version
    assert isinstance(decision.lineage, Lineage) and decision.lineage.version is not None
    assert decision.lineage.version.number == answer.version and decision.event
    assert decision["lineage"]["version"]["number"] == answer.version


def test_lineage_champion_and_audit_trail_are_typed(served: Deployed) -> None:
    audrey = served.world.people["audrey"].client
    number = served.versions[0]

    lineage = audrey.lineage(SERVED, number)
    champion = audrey.champion_at(SERVED, "2999-01-01T00:00:00Z")
    before = audrey.champion_at(SERVED, "2000-01-01T00:00:00Z")
    page = audrey.audit_events(model=SERVED, limit=3)

    assert isinstance(lineage, Lineage) and isinstance(lineage.model, ModelInfo) and lineage.model.name == SERVED
    assert isinstance(lineage.version, ModelVersionInfo)
    assert (lineage.version.number, lineage.version.version, lineage.version.state) == (number, number, "approved")
    assert lineage.run is not None and lineage.run["id"] == lineage.version.run_id
    assert [type(d) for d in lineage.datasets] == [DatasetVersionInfo] and lineage.datasets[0].name == "credit"
    assert lineage.pipeline is not None and lineage.pipeline["name"] == "credit-gbm"
    assert len(lineage.approvals) == 2 and all(isinstance(a, ApprovalInfo) for a in lineage.approvals)
    assert {a.decision for a in lineage.approvals} == {"approve"} and lineage.approvals[0].signature
    assert all(isinstance(c, DeploymentChange) for c in lineage.deployment_history)
    assert [(c.action, c.number) for c in lineage.deployment_history] == [("created", None), ("champion", number)]
    assert lineage["version"]["number"] == number
    assert isinstance(champion, ChampionAt)
    assert (champion.model_name, champion.number, champion.stopped, champion.retired) == (SERVED, number, False, False)
    assert champion.decided_by == lineage.deployment_history[-1].notification_id
    assert (before.number, before.model_version_id, before.decided_by) == (None, None, None)
    assert isinstance(page, AuditPage) and len(page) == 3 and page.next_after is not None
    assert all(isinstance(e, AuditEvent) and e.model_name == SERVED and e.hash for e in page)
    following = audrey.audit_events(model=SERVED, limit=3, cursor=page.next_after)
    assert following.events[0].notification_id > page.events[-1].notification_id
    assert page["events"][0]["notification_id"] == page.events[0].notification_id


def test_manifest_and_provenance_are_typed(served: Deployed) -> None:
    audrey = served.world.people["audrey"].client
    run_id = audrey.model_version(SERVED, served.versions[0]).run_id

    manifest = audrey.manifest(run_id)
    provenance = audrey.provenance(run_id)

    assert isinstance(manifest, Manifest)
    assert manifest.run_id == run_id and manifest.digest.startswith("sha256:") and manifest.position > 0
    assert isinstance(manifest.document, dict) and manifest.document and manifest["digest"] == manifest.digest
    assert isinstance(provenance, Provenance) and provenance.payload_type == "application/vnd.in-toto+json"
    assert provenance.signatures and provenance.signatures[0]["keyid"] and provenance.signatures[0]["sig"]
    assert provenance.statement["_type"].startswith("https://in-toto.io/Statement")
    assert provenance["payloadType"] == provenance.payload_type


def test_monitoring_drift_check_and_reports_are_typed(served: Deployed) -> None:
    people = served.world.people
    pia, olivia, audrey = people["pia"].client, people["olivia"].client, people["audrey"].client
    pia.predict_batch(SERVED, [{"input": features_of(row)} for row in credit_rows(30, seed=12)])

    checked = olivia.check_drift(SERVED, window=30, min_position=pia.position)
    view = audrey.monitoring(SERVED, min_position=pia.position, window=10)
    report = audrey.report(SERVED, served.versions[0], "explanations")
    fairness = audrey.report(SERVED, served.versions[0], "fairness")

    assert isinstance(checked, DriftCheckResult)
    assert (checked.model_name, checked.version) == (SERVED, served.versions[0]) and checked.window
    assert isinstance(view, Monitoring) and (view.model_name, view.window) == (SERVED, 10)
    assert all(isinstance(v, VersionServing) for v in view.versions)
    champion = next(v for v in view.versions if v.version == served.versions[0])
    assert champion.role == "served" and champion.predictions >= 30
    assert all(isinstance(w, AccuracyWindow) for w in view.live_accuracy)
    assert view["model_name"] == SERVED
    assert isinstance(report, Report) and (report.kind, report.version, report.model_name) == (
        "explanations",
        served.versions[0],
        SERVED,
    )
    assert report.summary["explainer"] == "tree" and "report.html" in report.attachments and report.position > 0
    assert isinstance(fairness, Report) and fairness.kind == "fairness" and fairness.computed_from


def test_an_export_is_typed_when_created_and_listed(served: Deployed) -> None:
    audrey = served.world.people["audrey"].client

    created = audrey.create_export(SERVED, predictions="none")
    listed = audrey.exports()

    assert isinstance(created, ExportCreated) and created.size > 0 and created.events > 0 and created.position > 0
    assert created.digest.startswith("sha256:") and created["id"] == created.id
    found = next(e for e in listed if e.id == created.id)
    assert isinstance(found, ExportInfo)
    assert (found.model_name, found.bundle_digest, found.size) == (SERVED, created.digest, created.size)
    assert found.events > 0 and found.scope["predictions"] == "none"
    assert found.created_by == audrey.me().id and found.downloads == 0


def test_a_privileged_change_and_its_confirmation_are_typed(world: World) -> None:
    admin, other = world.admin, world.second
    assert other is not None
    erin = admin.create_principal("erin", [])

    with pytest.raises(ChangePending) as pending:
        admin.grant_role(erin.id, "approver", reason="joins the review board")
    proposal = other.privileged_change(pending.value.change_id)
    confirmed = other.confirm_change(pending.value.change_id)

    assert isinstance(proposal, ChangeInfo)
    assert (proposal.id, proposal.status, proposal.confirmer) == (pending.value.change_id, "pending", None)
    assert proposal.reason == "joins the review board" and proposal.details and proposal.proposer
    assert isinstance(confirmed, ChangeOutcome) and not confirmed.pending and confirmed.position > 0
    assert confirmed.api_key is None and confirmed["id"] == confirmed.id
    assert other.privileged_change(proposal.id).status == "confirmed"
