"""A hostile python pipeline through the real runner: every attempt denied, the run recorded, the ledger verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.hostile_code import (
    ATTEMPTS,
    HOSTILE_PY,
    Listener,
    hostile_params,
    plant_other_run,
    secrets_of,
)
from support.runner_world import code_archive, dataset, python_pipeline, request, running, wait_finished

from domain.run import Run
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.serving.vault import KEK_FILE, SubjectVault

RUNNER_API_KEY = "mlk_runner_e2e_secret_61f0a2"


def _final_metrics(services: Services, run_id: str) -> dict[str, float]:
    latest: dict[str, tuple[int, float]] = {}
    for event in services.ledger.events.get(services.ledger.get(run_id, Run).id):
        if isinstance(event, Run.MetricsLogged):
            for point in event.metrics:
                if point["key"] not in latest or point["step"] >= latest[point["key"]][0]:
                    latest[point["key"]] = (point["step"], point["value"])
    return {key: value for key, (_, value) in latest.items()}


def test_a_hostile_pipeline_is_denied_everything_recorded_as_succeeded_and_the_ledger_verifies(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_dir = services.settings.keys_dir
    SubjectVault(services.writer_engine, keys_dir)  # the subject KEK exists from the vault's first use
    assert (keys_dir / "ledger.pem").is_file() and (keys_dir / KEK_FILE).is_file()
    monkeypatch.setenv("MLLEDGER_DATABASE_URL", services.settings.resolved_database_url)
    monkeypatch.setenv("MLLEDGER_RUNNER_API_KEY", RUNNER_API_KEY)
    work = tmp_path / "runner-work"
    other_run = plant_other_run(work)
    listener = Listener()
    data = dataset(services)
    code = code_archive(services, HOSTILE_PY)
    params = hostile_params(keys_dir, other_run, listener)
    run_id = request(
        services, python_pipeline(services, "hostile", "train:main"), data, code_version_id=code, params=params
    )

    try:
        with running(services, work_dir=work):
            (run,) = wait_finished(services, [run_id])
    finally:
        listener.close()

    assert run.status == "succeeded", services.ledger.get(run_id, Run)
    metrics = _final_metrics(services, run_id)
    assert {name: metrics[f"leaked_{name}"] for name in ATTEMPTS} == dict.fromkeys(ATTEMPTS, 0.0)
    assert metrics["attempts"] == len(ATTEMPTS)
    assert listener.received == []
    assert not (work / "planted.txt").exists()
    assert sorted(run.artifacts) == ["execution.json", "model.json", "predictions.json"]
    secrets = [*secrets_of(keys_dir), services.settings.resolved_database_url.encode(), RUNNER_API_KEY.encode()]
    for name, digest in run.artifacts.items():
        stored = services.blobs.path_of(digest).read_bytes()
        assert not any(secret in stored for secret in secrets), name
    execution = json.loads(services.blobs.path_of(run.artifacts["execution.json"]).read_bytes())
    assert execution["sandbox"]["kind"] == "bubblewrap" and execution["sandbox"]["network"] is False

    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)
    report = verify_ledger(services.settings, [], workers=2)
    assert report.ok, [finding.describe() for finding in report.findings]
