"""A runner records what each run used, whatever way it ended, and the usage
read model counts it: real runner, real workers, real pipelines."""

from __future__ import annotations

import pytest
from support.runner_world import (
    code_archive,
    dataset,
    python_pipeline,
    request,
    running,
    sklearn_pipeline,
    wait_finished,
)

from projections.usage_queries import usage
from service.bootstrap import Services

BURN = """
import os
import time

def burn(request):
    while time.process_time() < 1.5:
        pass
    with open(os.path.join(request["output_dir"], "model.json"), "w") as handle:
        handle.write("{}")
    return {"burnt": time.process_time()}

def broken(request):
    raise RuntimeError("the data is cursed")
"""


def test_a_python_run_records_the_cpu_its_entrypoint_burnt(services: Services) -> None:
    code = code_archive(services, BURN)
    run_id = request(
        services, python_pipeline(services, "burner", "train:burn"), dataset(services), code_version_id=code
    )

    with running(services):
        (run,) = wait_finished(services, [run_id])

    assert run.status == "succeeded", run
    assert run.resources is not None
    assert 1.5 * 0.8 <= run.resources["cpu_seconds"] <= 1.5 * 1.5
    assert run.resources["backend"] == "local"
    assert run.resources["wall_seconds"] > 0
    assert run.resources["peak_rss_bytes"] > 10 * 10**6


def test_a_failed_run_and_a_sklearn_run_record_resources_and_usage_counts_them(services: Services) -> None:
    data = dataset(services)
    fit = request(services, sklearn_pipeline(services), data)
    code = code_archive(services, BURN)
    broken = request(services, python_pipeline(services, "broken", "train:broken"), data, code_version_id=code)

    with running(services):
        runs = wait_finished(services, [fit, broken])

    assert [run.status for run in runs] == ["succeeded", "failed"]
    assert all(isinstance(run.resources, dict) and run.resources["cpu_seconds"] > 0 for run in runs)
    services.runner.catch_up()
    with services.engine.connect() as conn:
        answer = usage(conn, services.settings.rates, group_by="pipeline")
    assert {group.key: group.runs for group in answer.groups} == {"logreg": 1, "broken": 1}
    assert answer.total.runs == 2
    assert answer.total.cpu_seconds == pytest.approx(sum(run.resources["cpu_seconds"] for run in runs if run.resources))
