"""The manifests read model on SQLite and PostgreSQL: a runner-mode run's manifest
holds exactly what was recorded (inputs, environment, outputs, reproductions,
every event by its stored hash), its digest is the canonical JSON's sha256, and a
rebuild reproduces every row."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from domain.integrity.canonical import canonical_json
from domain.integrity.sealing import SealedEvent
from domain.pipeline import Pipeline
from projections import manifests as m
from projections.base import ProjectionRunner
from service.bootstrap import Services

ADMIN = "user:admin"
RUNNER = "runner-1"
SPEC = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "features": ["a"],
    "target": "y",
    "task": "classification",
}
ENVIRONMENT: dict[str, Any] = {
    "python": "3.11.9",
    "packages": {"scikit-learn": "1.5.0"},
    "seed": 7,
    "digest": "sha256:" + "e" * 64,
}


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RecordedRun:
    """What the test recorded, to compare the manifest with."""

    run_id: str
    pipeline_id: str
    dataset_id: str
    code_id: str


@pytest.fixture
def runner(services: Services) -> ProjectionRunner:
    """The service's projection runner once it feeds the manifests; until then one of this projection alone."""
    if m.Manifests.name in services.runner.projections:
        return services.runner
    return ProjectionRunner(services.writer_engine, services.runner.select_notifications, [m.Manifests()])


def record_run(services: Services, *, name: str = "credit-lr") -> RecordedRun:
    """A runner-mode run's whole life, recorded with the ledger's commands."""
    ledger = services.ledger
    ledger.add_pipeline_spec(name=name, kind="sklearn", spec=SPEC, actor=ADMIN)
    dataset_id = ledger.register_dataset_version(
        name="loans",
        digest=digest("loans"),
        size=2048,
        format="csv",
        schema=[{"name": "a", "type": "float"}, {"name": "y", "type": "int"}],
        row_count=100,
        datasheet={"motivation": "credit"},
        source="s3://bucket/loans.csv",
        actor=ADMIN,
    ).id
    code_id = ledger.register_code_version(
        repository="https://example.com/credit.git",
        commit="a" * 40,
        archive_digest=digest("code"),
        entrypoint="train:main",
        actor=ADMIN,
    ).id
    run_id = ledger.start_run(
        name="nightly",
        mode="runner",
        pipeline=name,
        pipeline_version=None,
        dataset_version_ids=[dataset_id],
        code_version_id=code_id,
        params={"C": 0.5},
        seed=7,
        device="auto",
        actor=ADMIN,
    ).id
    runner_actor = f"runner:{RUNNER}"
    ledger.claim_run(run_id, RUNNER, "host-a")
    ledger.record_environment(run_id, RUNNER, ENVIRONMENT, ENVIRONMENT["digest"], "cpu", "no CUDA device")
    ledger.log_metrics(
        run_id, [{"key": "loss", "value": 0.9, "step": 0}, {"key": "loss", "value": 0.4, "step": 1}], actor=runner_actor
    )
    ledger.log_metrics(run_id, [{"key": "auc", "value": 0.81, "step": 0}], actor=runner_actor)
    ledger.record_artifact(run_id, "model.pkl", digest("model"), 1234, "application/octet-stream", actor=runner_actor)
    ledger.record_artifact(run_id, "metrics.json", digest("metrics"), 56, "application/json", actor=runner_actor)
    ledger.finish_run(run_id, "succeeded", None, actor=runner_actor)
    return RecordedRun(
        run_id=run_id, pipeline_id=str(Pipeline.create_id(name=name)), dataset_id=dataset_id, code_id=code_id
    )


def stored_events(services: Services, run_id: str) -> list[tuple[int, str, str]]:
    """(version, hash, recorded_at) of every stored event of the run."""
    events = services.ledger.recorder.select_events(uuid.UUID(run_id))
    rows = []
    for event in events:
        sealed = SealedEvent.from_record(event.state)
        rows.append((event.originator_version, sealed.hash, sealed.envelope_fields()["recorded_at"]))
    return rows


def document(runner: ProjectionRunner, run_id: str) -> dict[str, Any]:
    with runner.engine.connect() as conn:
        found = m.manifest(conn, run_id)
    assert found is not None
    return found.document


def all_rows(runner: ProjectionRunner) -> dict[str, list[tuple[Any, ...]]]:
    with runner.engine.connect() as conn:
        return {t.name: sorted(tuple(row) for row in conn.execute(sa.select(t))) for t in m.Manifests.tables}


def test_a_runner_run_manifest_holds_its_recorded_inputs(services: Services, runner: ProjectionRunner) -> None:
    recorded = record_run(services)

    runner.catch_up()
    manifest = document(runner, recorded.run_id)

    assert manifest["run_id"] == recorded.run_id
    assert (manifest["name"], manifest["mode"], manifest["status"]) == ("nightly", "runner", "succeeded")
    assert manifest["inputs"] == {
        "pipeline": {
            "id": recorded.pipeline_id,
            "name": "credit-lr",
            "kind": "sklearn",
            "version": 1,
            "spec": SPEC,
            "spec_digest": "sha256:" + hashlib.sha256(canonical_json(SPEC)).hexdigest(),
        },
        "datasets": [
            {
                "id": recorded.dataset_id,
                "name": "loans",
                "number": 1,
                "digest": digest("loans"),
                "size": 2048,
                "format": "csv",
            },
        ],
        "code": {
            "id": recorded.code_id,
            "repository": "https://example.com/credit.git",
            "commit": "a" * 40,
            "archive_digest": digest("code"),
            "entrypoint": "train:main",
        },
        "params": {"C": 0.5},
        "seed": 7,
        "device_requested": "auto",
    }


def test_a_runner_run_manifest_holds_its_environment_execution_and_outputs(
    services: Services, runner: ProjectionRunner
) -> None:
    recorded = record_run(services)

    runner.catch_up()
    manifest = document(runner, recorded.run_id)

    events = stored_events(services, recorded.run_id)
    assert manifest["environment"] == ENVIRONMENT
    assert manifest["execution"] == {
        "runner_id": RUNNER,
        "host": "host-a",
        "device": "cpu",
        "device_note": "no CUDA device",
        "started_at": events[1][2],
        "finished_at": events[-1][2],
        "error": None,
    }
    assert manifest["outputs"] == {
        "artifacts": [
            {"name": "model.pkl", "digest": digest("model"), "size": 1234, "media_type": "application/octet-stream"},
            {"name": "metrics.json", "digest": digest("metrics"), "size": 56, "media_type": "application/json"},
        ],
        "metrics": {"loss": {"value": 0.4, "step": 1}, "auc": {"value": 0.81, "step": 0}},
    }
    assert (manifest["reproduces"], manifest["reproductions"]) == (None, [])


def test_a_manifest_lists_every_event_of_the_run_with_its_stored_hash(
    services: Services, runner: ProjectionRunner
) -> None:
    recorded = record_run(services)

    runner.catch_up()
    manifest = document(runner, recorded.run_id)

    assert [e["type"] for e in manifest["events"]] == [
        "Requested",
        "Claimed",
        "EnvironmentCaptured",
        "MetricsLogged",
        "MetricsLogged",
        "ArtifactRecorded",
        "ArtifactRecorded",
        "Finished",
    ]
    assert [(e["version"], e["hash"], e["recorded_at"]) for e in manifest["events"]] == stored_events(
        services, recorded.run_id
    )
    notification_ids = [e["notification_id"] for e in manifest["events"]]
    assert notification_ids == sorted(notification_ids)


def test_the_manifest_digest_is_the_sha256_of_its_canonical_json(services: Services, runner: ProjectionRunner) -> None:
    recorded = record_run(services)

    runner.catch_up()
    with runner.engine.connect() as conn:
        found = m.manifest(conn, recorded.run_id)

    assert found is not None
    assert found.digest == "sha256:" + hashlib.sha256(canonical_json(found.document)).hexdigest()
    assert found.position == found.document["events"][-1]["notification_id"]


def test_reproductions_are_recorded_on_both_runs(services: Services, runner: ProjectionRunner) -> None:
    original = record_run(services).run_id
    again = services.ledger.request_again(original, ADMIN, reproduce=True).id
    services.ledger.record_reproduction(original, again, True, "artifact-digest", 0.0, {"artifact": "x"}, ADMIN)

    runner.catch_up()

    assert document(runner, original)["reproductions"] == [
        {"run_id": again, "verdict": "verified", "method": "artifact-digest", "tolerance": 0.0}
    ]
    assert document(runner, original)["events"][-1]["type"] == "ReproductionVerified"
    reproduction = document(runner, again)
    assert (reproduction["reproduces"], reproduction["status"], reproduction["events"][0]["type"]) == (
        original,
        "requested",
        "Requested",
    )


def test_a_manifest_built_over_many_small_batches_equals_one_built_at_once(
    services: Services, runner: ProjectionRunner
) -> None:
    recorded = record_run(services)
    runner.catch_up()
    at_once = all_rows(runner)

    small = ProjectionRunner(runner.engine, runner.select_notifications, [m.Manifests()], batch_size=1)
    small.rebuild(m.Manifests.name)

    assert all_rows(runner) == at_once
    assert [json.loads(row[1])["run_id"] for row in at_once["run_manifests"]] == [recorded.run_id]


def test_a_rebuild_equals_the_original_row_for_row(services: Services, runner: ProjectionRunner) -> None:
    original = record_run(services).run_id
    again = services.ledger.request_again(original, ADMIN, reproduce=True).id
    services.ledger.record_reproduction(original, again, False, "metrics", 0.0, {"auc": [0.8, 0.7]}, ADMIN)
    runner.catch_up()
    before = all_rows(runner)

    runner.rebuild(m.Manifests.name)

    assert len(before["run_manifests"]) == 2
    assert all_rows(runner) == before


def test_an_unknown_run_has_no_manifest(services: Services, runner: ProjectionRunner) -> None:
    runner.catch_up()

    with runner.engine.connect() as conn:
        assert m.manifest(conn, str(uuid.uuid4())) is None
