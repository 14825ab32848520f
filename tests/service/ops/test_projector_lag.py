"""The projector against a write burst: while it is stopped the lag grows (in events and in age of the
oldest unapplied event, as /readyz and /metrics report it); once it runs again the lag returns to zero,
and every read model then equals a rebuild from the log, row for row (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, drop_schema, make_settings

from domain.prediction import Prediction
from domain.subject import Subject
from projections.base import ProjectionRunner, _read_position
from service.api.errors import ProjectionsBehind
from service.api.write_brake import WriteBrake
from service.app import create_app
from service.bootstrap import Services, all_projections, open_services
from service.ops.projector import ProjectorThread, projection_lag, run_once
from service.ops.workload import append_events

FEATURES = ["x0", "x1", "x2"]


@pytest.fixture
def services(backend: str, tmp_path: Path) -> Iterator[Services]:
    """A ledger whose read models advance in small batches (many batches per burst)."""
    settings = make_settings(backend, tmp_path / "data", projection_batch_size=100, projection_poll_seconds=0.05)
    opened = open_services(settings, migrate=True)
    yield opened
    opened.close()
    if backend == "postgres":
        drop_schema(settings.database_schema)


def runs(services: Services, count: int, tag: str) -> None:
    """Runs with parameters, metric batches, an artifact and an outcome."""
    ledger = services.ledger
    for index in range(count):
        run = ledger.start_run(
            name=f"run-{tag}-{index}",
            mode="client",
            pipeline=None,
            pipeline_version=None,
            dataset_version_ids=[],
            code_version_id=None,
            params={"depth": index % 5},
            seed=index,
            device="cpu",
            actor="scientist",
        )
        ledger.log_params(run.id, {"lr": 0.1}, "scientist")
        for step in range(3):
            ledger.log_metrics(run.id, [{"key": "auc", "value": 0.5 + step / 10, "step": step}], "scientist")
        digest = "sha256:" + hashlib.sha256(f"{tag}-{index}".encode()).hexdigest()
        ledger.record_artifact(run.id, "model.pkl", digest, 10, "application/octet-stream", "scientist")
        ledger.finish_run(run.id, "succeeded" if index % 4 else "failed", None if index % 4 else "boom", "scientist")


def predictions(services: Services, count: int, tag: str) -> None:
    """Predictions in batches (every tenth with a data subject, some erased later), outcomes for some of
    them in the same batch and in later ones, and overrides."""
    ledger = services.ledger
    made: list[Prediction] = []
    for start in range(0, count, 250):
        batch: list[Any] = []
        for index in range(start, min(start + 250, count)):
            subject = f"subject-{tag}-{index}" if index % 10 == 0 else None
            prediction = Prediction.make(
                model_name="burst-model",
                model_version_id="00000000-0000-0000-0000-000000000001",
                number=1,
                role="champion",
                request_id=f"request-{tag}-{index}",
                shadow_of=None,
                subject_id=subject,
                input_digest="sha256:" + hashlib.sha256(f"{tag}-{index}".encode()).hexdigest(),
                input=None if subject else {f: float(index % 7) for f in FEATURES},
                input_ciphertext="Y2lwaGVy" if subject else None,
                input_key_id=f"key-{tag}-{index}" if subject else None,
                output={"label": index % 2, "probability": (index % 100) / 100},
                reason_codes=[{"feature": "x0", "contribution": 0.1}],
                explanation=None,
                latency_ms=1.0,
                actor="predictor",
            )
            if index % 7 == 0:  # its outcome in the same transaction, so often in the same projection batch
                prediction.record_outcome(index % 2, actor="predictor")
            batch.append(prediction)
            made.append(prediction)
            if subject is not None:
                batch.append(Subject(subject_id=subject, key_id=f"key-{tag}-{index}", actor="vault"))
        ledger.save(*batch)
    later: list[Any] = []
    for index, prediction in enumerate(made):
        if index % 7 and index % 5 == 0:
            prediction.record_outcome((index + 1) % 2, actor="predictor")
        if index % 9 == 0:
            prediction.override({"label": 1}, "reviewed", actor="operator")
            prediction.override({"label": 0}, "reviewed again", actor="operator")
        if prediction.pending_events:
            later.append(prediction)
    for index in range(0, count, 40):  # erase some subjects
        erased = ledger.get(Subject.create_id(f"subject-{tag}-{index}"), Subject)
        erased.erase("asked to", actor="admin")
        later.append(erased)
    for start in range(0, len(later), 250):
        ledger.save(*later[start : start + 250])


def burst(services: Services, tag: str) -> None:
    append_events(services.ledger, 1_500, batch=500)  # principals with role churn, and datasets
    runs(services, 20, tag)
    predictions(services, 1_200, tag)


def snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, ordered by primary key."""
    tables = [t for p in services.runner.projections.values() for t in p.tables]
    with services.engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))] for t in tables}


def assert_predictions_as_written(services: Services, bursts: int) -> None:
    """The predictions, outcomes, overrides and erasures of :func:`predictions` are all in the read model."""
    count = 1_200
    outcomes = sum(1 for i in range(count) if i % 7 == 0 or i % 5 == 0)
    with services.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT outcome, overrides, override FROM predictions")).all()
        erased = conn.execute(sa.text("SELECT count(*) FROM subjects WHERE erased_at IS NOT NULL")).scalar()
        subjects = conn.execute(sa.text("SELECT count(*) FROM subjects")).scalar()
    assert len(rows) == bursts * count
    assert sum(1 for r in rows if r.outcome is not None) == bursts * outcomes
    overridden = [r for r in rows if r.overrides]
    assert len(overridden) == bursts * len(range(0, count, 9))
    assert {r.overrides for r in overridden} == {2}
    assert all('"reason":"reviewed again"' in r.override for r in overridden)
    assert (subjects, erased) == (bursts * count // 10, bursts * len(range(0, count, 40)))


def wait_until_current(services: Services, timeout: float = 180.0) -> float:
    """Seconds until every read model reached the log's end."""
    started = time.monotonic()
    while projection_lag(services).oldest_seconds > 0 or any(projection_lag(services).events.values()):
        assert time.monotonic() - started < timeout, f"still behind: {projection_lag(services)}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_after_a_burst_the_lag_returns_to_zero_and_every_read_model_equals_a_rebuild(services: Services) -> None:
    while run_once(services):
        pass
    assert set(projection_lag(services).events.values()) == {0}

    burst(services, "a")  # the projector is stopped: a burst of writes piles up
    lag = projection_lag(services)
    head = services.ledger.position()
    assert lag.position == head
    assert min(lag.events.values()) > 3_000
    assert set(lag.seconds) == set(services.runner.projections)
    assert lag.oldest_seconds > 0

    projector = ProjectorThread(services)
    projector.start()
    try:
        burst(services, "b")  # and writes go on while it catches up
        wait_until_current(services)
    finally:
        projector.stop()
        projector.join(30)
    lag = projection_lag(services)
    assert lag.position == services.ledger.position() > head
    assert set(lag.events.values()) == {0} and lag.oldest_seconds == 0.0

    projected = snapshot(services)
    assert len(projected["tlog_leaves"]) == lag.position
    assert_predictions_as_written(services, bursts=2)
    for name in services.runner.projections:
        services.runner.rebuild(name)
    assert snapshot(services) == projected


def test_several_read_models_in_one_pass_equal_each_one_alone(services: Services) -> None:
    """The projector's pass (events read and opened once, read models side by side) writes what each
    read model writes on its own, even when they start from different positions."""
    burst(services, "c")
    runner = services.runner
    runner.catch_up("registry", max_batches=3)  # one read model ahead of the others
    names = [n for n in runner.projections if n != "transparency_log"]
    while runner.catch_up_together(names, max_batches=5):
        pass
    together = snapshot(services)

    alone = ProjectionRunner(services.writer_engine, runner.select_notifications, all_projections(), 100)
    for name in runner.projections:
        alone.rebuild(name)
    with services.engine.connect() as conn:
        assert {_read_position(conn, n, lock=False) for n in names} == {services.ledger.position()}
    rebuilt = snapshot(services)
    assert {t: rows for t, rows in rebuilt.items() if not t.startswith("tlog")} == {
        t: rows for t, rows in together.items() if not t.startswith("tlog")
    }


def test_readyz_and_metrics_report_each_read_models_lag(services: Services) -> None:
    append_events(services.ledger, 300, batch=100)
    services.runner.catch_up("transparency_log")
    head = services.ledger.position()
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as client:
        ready = client.get("/readyz").json()
        assert ready["position"] == head
        assert ready["projection_lag"]["transparency_log"] == 0
        assert ready["projection_lag"]["registry"] == head
        assert ready["projection_lag_seconds"]["transparency_log"] == 0
        assert ready["projection_lag_seconds"]["registry"] > 0
        assert ready["oldest_unprojected_seconds"] == max(ready["projection_lag_seconds"].values())

        assert client.get("/metrics").status_code == 401
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        text = answer.text
        assert f"mlledger_ledger_position {head}\n" in text
        assert 'mlledger_projection_lag_events{read_model="transparency_log"} 0\n' in text
        assert f'mlledger_projection_lag_events{{read_model="registry"}} {head}\n' in text
        assert 'mlledger_projection_lag_seconds{read_model="audit_trail"} ' in text
        assert "# TYPE mlledger_oldest_unprojected_event_seconds gauge" in text

        while run_once(services):
            pass
        ready = client.get("/readyz").json()
        assert set(ready["projection_lag"].values()) == {0}
        assert ready["oldest_unprojected_seconds"] == 0
        text = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
        assert 'mlledger_projection_lag_events{read_model="registry"} 0\n' in text


def test_projectors_that_share_the_read_models_out_bring_each_one_up_to_date(services: Services) -> None:
    """``mlledger project --follow --only ...`` in several processes: each projects only its own read
    models, and together they bring every one to the log's end, row for row what one projector writes."""
    burst(services, "d")
    with running(ProjectorThread(services, only={"transparency_log"})):
        deadline = time.monotonic() + 120
        while projection_lag(services).events["transparency_log"]:
            assert time.monotonic() < deadline, projection_lag(services)
            time.sleep(0.05)
        time.sleep(0.3)  # a few more polls: it must not touch the others
        assert all(lag > 0 for name, lag in projection_lag(services).events.items() if name != "transparency_log")
        with (
            running(ProjectorThread(services, only={"registry", "audit_trail"})),
            running(ProjectorThread(services, only={"manifests", "predictions"})),
        ):
            wait_until_current(services)
    projected = snapshot(services)
    for name in services.runner.projections:
        services.runner.rebuild(name)
    assert snapshot(services) == projected


@contextlib.contextmanager
def running(projector: ProjectorThread) -> Iterator[ProjectorThread]:
    projector.start()
    try:
        yield projector
    finally:
        projector.stop()
        projector.join(30)


def test_a_projector_for_a_read_model_that_does_not_exist_is_refused(services: Services) -> None:
    with pytest.raises(ValueError, match=r"no read model named registri; known: .*registry"):
        ProjectorThread(services, only={"registri"})
    with pytest.raises(ValueError, match="none given"):
        ProjectorThread(services, only=set())


def test_the_write_brake_holds_prediction_writes_back_while_read_models_lag_and_refuses_after_its_longest_wait(
    services: Services,
) -> None:
    append_events(services.ledger, 600, batch=200)  # the projector is stopped: the read models fall behind
    time.sleep(0.6)
    off = WriteBrake(services, lag_seconds=0, max_wait_seconds=1)
    brake = WriteBrake(services, lag_seconds=0.5, max_wait_seconds=1)

    off.wait("key")  # never holds anything back
    started = time.monotonic()
    with pytest.raises(ProjectionsBehind, match=r"read models are \d+\.\d s behind .*nothing was written"):
        brake.wait("key")
    assert 1.0 <= time.monotonic() - started < 5.0
    assert brake.waited == 1 and off.waited == 0

    patient = WriteBrake(services, lag_seconds=0.5, max_wait_seconds=120)
    assert patient.behind() > 0.5
    with running(ProjectorThread(services)):
        patient.wait("key")  # returns once the projector brought the read models within the bound
        assert patient.behind() <= 0.5


def test_one_api_key_may_hold_only_so_many_writes_at_the_brake_while_another_key_still_waits(
    services: Services,
) -> None:
    append_events(services.ledger, 300, batch=100)  # no projector: the read models stay behind
    time.sleep(0.6)
    brake = WriteBrake(services, lag_seconds=0.5, max_wait_seconds=1.5, max_waiting=2)
    outcomes: dict[str, str] = {}

    def write(name: str, key: str) -> None:
        try:
            brake.wait(key)
            outcomes[name] = "through"
        except ProjectionsBehind as refused:
            outcomes[name] = str(refused)

    waiting = [threading.Thread(target=write, args=(f"greedy-{i}", "greedy")) for i in range(2)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 5
    while brake.waited < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    write("greedy-2", "greedy")  # a third write of the same key: refused at once
    refused_in = time.monotonic() - started
    other = threading.Thread(target=write, args=("other", "other"))
    other.start()
    for thread in [*waiting, other]:
        thread.join(10)

    assert refused_in < 0.5
    assert "this API key already has 2 writes waiting" in outcomes["greedy-2"]
    assert "did not catch up within 1.5 s" in outcomes["greedy-0"]  # the two held ones waited their time
    assert "did not catch up within 1.5 s" in outcomes["greedy-1"]
    assert "did not catch up within 1.5 s" in outcomes["other"]  # another key was let in to wait
    assert brake.waited == 3
    assert brake.waiting == 0  # every slot given back


def test_bulk_prediction_writes_take_turns_while_the_brake_is_on_and_a_turn_not_given_in_time_is_refused(
    services: Services,
) -> None:
    """Only ``concurrency`` bulk writes make their events at once; the others wait for a turn, counted
    among their key's waiting writes; a turn not given within the longest wait is a 503, nothing written."""
    brake = WriteBrake(services, lag_seconds=30, max_wait_seconds=1, concurrency=1)  # read models within bound
    order: list[str] = []
    first_in, release = threading.Event(), threading.Event()

    def first() -> None:
        with brake.writing("a"):
            order.append("first in")
            first_in.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with brake.writing("b"):
            order.append("second in")

    holder = threading.Thread(target=first)
    holder.start()
    assert first_in.wait(10)
    waiter = threading.Thread(target=second)
    waiter.start()
    deadline = time.monotonic() + 10
    while brake.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert brake.waiting == 1  # the second waits for its turn, counted as a waiting write of its key...
    assert order == ["first in"]  # ...and has made nothing yet
    release.set()
    holder.join(10)
    waiter.join(10)
    assert order == ["first in", "first out", "second in"]
    assert brake.waiting == 0

    with brake.writing("a"):
        started = time.monotonic()
        with (
            pytest.raises(ProjectionsBehind, match=r"none ended within 1 s; nothing was written"),
            brake.writing("b"),
        ):
            order.append("never")
        assert 0.9 <= time.monotonic() - started < 5.0
    assert "never" not in order and brake.waiting == 0

    off = WriteBrake(services, lag_seconds=0, max_wait_seconds=1, concurrency=1)
    with off.writing("a"), off.writing("b"):  # no turns while the brake is off
        pass


def test_a_braked_prediction_write_answers_503_with_retry_after_and_only_after_authorization(
    backend: str, tmp_path: Path
) -> None:
    settings = make_settings(
        backend,
        tmp_path / "braked",
        write_brake_lag_seconds=0.2,
        write_brake_max_wait_seconds=0.5,
        write_brake_concurrency=1,
    )
    services = open_services(settings, migrate=True)
    try:
        append_events(services.ledger, 300, batch=100)
        time.sleep(0.3)
        with TestClient(create_app(settings, run_projector=False, services=services)) as client:
            refused = client.post("/v1/models/credit/predict:batch", json={"records": [{"input": {"x0": 1}}]})
            braked = client.post(  # held at the door: its (invalid) body is never read
                "/v1/models/credit/predict:batch",
                json={"records": [{"x0": 1}]},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            services.runner.catch_up()
            through, again = (
                client.post(
                    "/v1/models/credit/predict:batch",
                    json={"records": [{"input": {"x0": 1}}]},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
                for _ in range(2)
            )
    finally:
        services.close()
        if backend == "postgres":
            drop_schema(settings.database_schema)

    assert refused.status_code == 401
    assert braked.status_code == 503, braked.text
    assert braked.headers["Retry-After"] == "1"
    assert braked.headers["content-type"].startswith("application/problem+json")
    assert "read models are" in braked.json()["detail"]
    assert through.status_code == 404  # within the bound: on to the request itself (no such model here)
    assert again.status_code == 404  # the failed write gave its turn (the only one) back
