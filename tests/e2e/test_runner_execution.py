"""Runners execute recorded pipelines, record errors clearly, and reproduce runs."""

from __future__ import annotations

import pytest
from support.runner_world import (
    code_archive,
    dataset,
    python_pipeline,
    request,
    running,
    sklearn_pipeline,
    torch_pipeline,
    wait_finished,
)

from domain.errors import InvalidPayload
from domain.run import Run
from service.bootstrap import Services
from service.runners.environment import resolve_device


def _events(services: Services, run_id: str) -> list[object]:
    return list(services.ledger.events.get(services.ledger.get(run_id, Run).id))


@pytest.mark.parametrize("kind", ["sklearn", "torch"])
def test_a_run_and_its_reproduction_are_verified(services: Services, kind: str) -> None:
    data = dataset(services)
    pipeline = sklearn_pipeline(services) if kind == "sklearn" else torch_pipeline(services)
    run_id = request(services, pipeline, data, params={"epochs": 3} if kind == "torch" else {})

    with running(services):
        (run,) = wait_finished(services, [run_id])
        assert run.status == "succeeded", run
        reproduction = services.ledger.request_again(run_id, "bob", reproduce=True).id
        (again,) = wait_finished(services, [reproduction])

    original = services.ledger.get(run_id, Run)
    assert again.status == "succeeded"
    assert original.verdicts == {reproduction: "verified"}
    verdict = next(e for e in _events(services, run_id) if isinstance(e, Run.ReproductionVerified))
    assert verdict.method == "artifact-digest"
    assert run.environment["digest"] == run.environment_digest
    assert run.environment["device"] == resolve_device("auto")[0]  # cuda on a GPU host
    assert services.ledger.get(reproduction, Run).device == run.environment["device"]  # not "auto" again


def test_a_changed_param_makes_the_reproduction_diverge_naming_it(services: Services) -> None:
    data = dataset(services)
    run_id = request(services, sklearn_pipeline(services), data, params={"C": 1.0})

    with running(services):
        wait_finished(services, [run_id])
        reproduction = services.ledger.request_again(run_id, "bob", reproduce=True, params={"C": 0.001}).id
        wait_finished(services, [reproduction])

    diverged = next(e for e in _events(services, run_id) if isinstance(e, Run.ReproductionDiverged))
    assert diverged.reproduction_run_id == reproduction
    assert diverged.differences["params"] == {"C": {"original": 1.0, "reproduced": 0.001}}
    assert diverged.differences["first_differing_prediction"]


def test_a_dataset_changed_on_disk_is_refused_not_trained_on(services: Services) -> None:
    from domain.dataset import DatasetVersion

    data = dataset(services)
    path = services.blobs.path_of(services.ledger.get(data, DatasetVersion).digest)
    path.write_bytes(path.read_bytes().replace(b"label", b"lab3l"))
    run_id = request(services, sklearn_pipeline(services), data)

    with running(services):
        (run,) = wait_finished(services, [run_id])

    finished = next(e for e in _events(services, run_id) if isinstance(e, Run.Finished))
    assert run.status == "failed"
    assert "was changed on disk; it will not be handed out" in finished.error
    assert "model.pkl" not in run.artifacts


def test_auto_device_records_what_it_chose_and_why(services: Services) -> None:
    run_id = request(services, sklearn_pipeline(services), dataset(services), device="auto")

    with running(services, device="auto"):
        wait_finished(services, [run_id])

    captured = next(e for e in _events(services, run_id) if isinstance(e, Run.EnvironmentCaptured))
    chosen, reason = resolve_device("auto")
    assert (captured.device, captured.device_note) == (chosen, reason)
    if chosen == "cpu":  # no GPU here: the note says why
        assert captured.device_note and "CUDA" in captured.device_note


SLEEPY = "import time\ndef main(request):\n    time.sleep(30)\n    return {'metrics': {}}\n"
FINE = (
    "import json, os\n"
    "def main(request):\n"
    "    open(os.path.join(request['output_dir'], 'model.bin'), 'wb').write(b'm')\n"
    "    return {'metrics': {'score': 1.0}, 'model_file': 'model.bin'}\n"
)


def test_bad_specs_fail_with_a_recorded_reason_and_the_runner_keeps_serving(services: Services) -> None:
    data = dataset(services)
    code = code_archive(services, FINE)
    sleepy = code_archive(services, SLEEPY)
    bad = {
        "unknown estimator": request(
            services, sklearn_pipeline(services, "nope", "sklearn.ensemble.NoSuchModel"), data
        ),
        "param of the wrong type": request(services, sklearn_pipeline(services, "typed"), data, params={"C": "high"}),
        "missing target column": request(services, sklearn_pipeline(services, "target", target="missing"), data),
        "entrypoint not found": request(
            services, python_pipeline(services, "py-missing", "train:nothing"), data, code_version_id=code
        ),
        "time limit exceeded": request(
            services, python_pipeline(services, "py-slow", "train:main", time_limit=1), data, code_version_id=sleepy
        ),
    }
    good = request(services, python_pipeline(services, "py-fine", "train:main"), data, code_version_id=code)

    with running(services, concurrency=2):
        runs = wait_finished(services, [*bad.values(), good], timeout=120)

    reasons = {
        what: next(e for e in _events(services, run_id) if isinstance(e, Run.Finished)).error
        for what, run_id in bad.items()
    }
    assert [r.status for r in runs] == ["failed"] * len(bad) + ["succeeded"]
    assert "NoSuchModel" in reasons["unknown estimator"]
    assert "C" in reasons["param of the wrong type"]
    assert "missing" in reasons["missing target column"]
    assert "not found" in reasons["entrypoint not found"]
    assert "time limit" in reasons["time limit exceeded"]


def test_a_class_outside_sklearn_is_refused_at_submission(services: Services) -> None:
    with pytest.raises(InvalidPayload) as caught:
        sklearn_pipeline(services, "evil", "os.system")

    assert caught.value.field == "spec.estimator"
