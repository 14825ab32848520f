"""The Run aggregate's rules and the state its events leave (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from domain.errors import (
    ArtifactAlreadyRecorded,
    InvalidPayload,
    ParamAlreadyRecorded,
    ReproductionAlreadyJudged,
    RuleViolated,
    RunAlreadyClaimed,
    RunAlreadyFinished,
    RunNeedsPipeline,
    RunNotClaimed,
    RunNotForRunners,
    RunNotHeldByRunner,
    RunNotReExecutable,
    RunNotSucceeded,
    UnclaimedRunOnlyCancellable,
)
from domain.run import Run, RunStatus

ALICE = "user:alice"
RUNNER = "runner:r1"
DIGEST = "sha256:" + "ab" * 32


def _run(mode: str = "runner", **overrides: Any) -> Run:
    fields: dict[str, Any] = {
        "name": "train",
        "mode": mode,
        "pipeline_id": "pipeline-1" if mode == "runner" else None,
        "pipeline_version": 1 if mode == "runner" else None,
        "spec_digest": DIGEST if mode == "runner" else None,
        "dataset_version_ids": ["dataset-1"],
        "code_version_id": None,
        "params": {"C": 1.0},
        "seed": 7,
        "device": "cpu",
        "reproduces": None,
        "actor": ALICE,
    }
    return Run(**(fields | overrides))


def _running_run() -> Run:
    run = _run()
    run.claim("r1", "host-1", actor=RUNNER)
    run.capture_environment({"python": "3.11"}, DIGEST, "cpu", None, actor=RUNNER)
    return run


def _succeeded_run() -> Run:
    run = _running_run()
    run.finish("succeeded", None, actor=RUNNER)
    return run


# -- Requesting ------------------------------------------------------------------


def test_a_run_for_runners_starts_requested() -> None:
    run = _run("runner")

    assert run.status is RunStatus.REQUESTED
    assert run.awaits_runner


def test_a_client_reported_run_starts_running() -> None:
    run = _run("client")

    assert run.status is RunStatus.RUNNING
    assert not run.awaits_runner


def test_a_run_status_equals_the_string_that_events_and_read_models_carry() -> None:
    assert RunStatus.SUCCEEDED == "succeeded"
    assert f"{RunStatus.ABANDONED}" == "abandoned"


def test_a_run_for_runners_without_a_pipeline_is_refused() -> None:
    with pytest.raises(RunNeedsPipeline) as caught:
        Run.check_request("runner", 7, "cpu", "train", pipeline=None)

    assert caught.value.field == "pipeline"


def test_a_client_reported_run_needs_no_pipeline() -> None:
    Run.check_request("client", 7, "cpu", "train", pipeline=None)


@pytest.mark.parametrize(
    ("mode", "seed", "device", "name", "field"),
    [
        pytest.param("batch", 7, "cpu", "train", "mode", id="unknown-mode"),
        pytest.param("client", -1, "cpu", "train", "seed", id="negative-seed"),
        pytest.param("client", 2**32, "cpu", "train", "seed", id="seed-too-large"),
        pytest.param("client", True, "cpu", "train", "seed", id="boolean-seed"),
        pytest.param("client", 7, "tpu", "train", "device", id="unknown-device"),
        pytest.param("client", 7, "cpu", "x" * 201, "name", id="name-too-long"),
    ],
)
def test_an_invalid_request_is_refused_naming_the_field(
    mode: str, seed: int, device: str, name: str, field: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        Run.check_request(mode, seed, device, name, pipeline="train")

    assert caught.value.field == field


# -- Claiming (a run is claimed once) ----------------------------------------------


def test_claiming_a_requested_run_gives_it_to_the_runner() -> None:
    run = _run()

    run.claim("r1", "host-1", actor=RUNNER)

    assert (run.status, run.runner_id) == (RunStatus.CLAIMED, "r1")
    assert run.is_active_under("r1")


def test_a_claimed_run_cannot_be_claimed_again() -> None:
    run = _run()
    run.claim("r1", "host-1", actor=RUNNER)

    with pytest.raises(RunAlreadyClaimed):
        run.claim("r2", "host-2", actor="runner:r2")

    assert run.runner_id == "r1"


def test_a_running_run_cannot_be_claimed() -> None:
    run = _running_run()

    with pytest.raises(RunAlreadyClaimed):
        run.claim("r2", "host-2", actor="runner:r2")


def test_a_client_reported_run_cannot_be_claimed() -> None:
    run = _run("client")

    with pytest.raises(RunNotForRunners):
        run.claim("r1", "host-1", actor=RUNNER)


def test_a_refused_claim_records_no_event() -> None:
    run = _run()
    run.claim("r1", "host-1", actor=RUNNER)
    run.collect_events()

    with pytest.raises(RunAlreadyClaimed):
        run.claim("r2", "host-2", actor="runner:r2")

    assert run.collect_events() == []


def test_a_claimed_run_no_longer_awaits_a_runner() -> None:
    run = _run()

    run.claim("r1", "host-1", actor=RUNNER)

    assert not run.awaits_runner


def test_a_named_rule_keeps_the_problem_type_of_the_rule_it_refines() -> None:
    refused = RunNotForRunners("a client-reported run is not executed by runners")

    assert isinstance(refused, RuleViolated)
    assert (refused.type_slug, refused.title) == ("rule-violated", "Rule violated")


def test_a_lost_claim_keeps_its_own_problem_type() -> None:
    assert RunAlreadyClaimed("taken").type_slug == "run-already-claimed"


# -- Environment and abandonment -----------------------------------------------------


def test_capturing_the_environment_after_the_claim_makes_the_run_running() -> None:
    run = _run()
    run.claim("r1", "host-1", actor=RUNNER)

    run.capture_environment({"python": "3.11"}, DIGEST, "cpu", None, actor=RUNNER)

    assert run.status is RunStatus.RUNNING
    assert (run.environment, run.environment_digest) == ({"python": "3.11"}, DIGEST)


def test_the_environment_cannot_be_captured_before_the_claim() -> None:
    run = _run()

    with pytest.raises(RunNotClaimed):
        run.capture_environment({}, DIGEST, "cpu", None, actor=RUNNER)


def test_the_environment_cannot_be_captured_twice() -> None:
    run = _running_run()

    with pytest.raises(RunNotClaimed):
        run.capture_environment({}, DIGEST, "cpu", None, actor=RUNNER)


def test_a_run_whose_runner_went_silent_is_abandoned() -> None:
    run = _running_run()

    run.abandon("r1", "no heartbeat", actor=ALICE)

    assert run.status is RunStatus.ABANDONED
    assert run.finished


def test_a_run_cannot_be_abandoned_under_a_runner_that_does_not_hold_it() -> None:
    run = _running_run()

    with pytest.raises(RunNotHeldByRunner):
        run.abandon("r2", "no heartbeat", actor=ALICE)


def test_a_requested_run_cannot_be_abandoned() -> None:
    run = _run()

    with pytest.raises(RunNotHeldByRunner):
        run.abandon("r1", "no heartbeat", actor=ALICE)


def test_a_run_is_not_active_under_a_runner_after_it_finished() -> None:
    run = _succeeded_run()

    assert not run.is_active_under("r1")


# -- Recording -------------------------------------------------------------------------


def test_logged_params_are_added_to_the_run() -> None:
    run = _running_run()

    run.log_params({"max_iter": 100}, actor=RUNNER)

    assert run.params == {"C": 1.0, "max_iter": 100}


def test_logging_a_param_again_with_the_same_value_records_nothing() -> None:
    run = _running_run()
    run.collect_events()

    run.log_params({"C": 1.0}, actor=RUNNER)

    assert run.collect_events() == []


def test_a_param_keeps_its_first_value() -> None:
    run = _running_run()

    with pytest.raises(ParamAlreadyRecorded) as caught:
        run.log_params({"C": 2.0}, actor=RUNNER)

    assert caught.value.field == "params.C"
    assert run.params["C"] == 1.0


def test_empty_params_are_refused() -> None:
    run = _running_run()

    with pytest.raises(InvalidPayload):
        run.log_params({}, actor=RUNNER)


def test_logged_metric_points_are_counted() -> None:
    run = _running_run()

    run.log_metrics([{"key": "loss", "value": 0.5, "step": 1}, {"key": "loss", "value": 0.4, "step": 2}], actor=RUNNER)

    assert run.metric_points == 2


def test_a_metric_point_that_is_not_finite_is_refused_naming_the_field() -> None:
    run = _running_run()

    with pytest.raises(InvalidPayload) as caught:
        run.log_metrics([{"key": "loss", "value": 0.5}, {"key": "loss", "value": float("nan")}], actor=RUNNER)

    assert caught.value.field == "metrics.1.value"


def test_a_metric_point_is_recorded_with_a_float_value_and_step_zero_by_default() -> None:
    run = _running_run()
    run.collect_events()

    run.log_metrics([{"key": "accuracy", "value": 1}], actor=RUNNER)

    (logged,) = run.collect_events()
    assert isinstance(logged, Run.MetricsLogged)
    assert logged.metrics == [{"key": "accuracy", "value": 1.0, "step": 0}]


def test_an_artifact_is_recorded_by_name_and_digest() -> None:
    run = _running_run()

    run.record_artifact("model.skops", DIGEST, 100, "application/octet-stream", actor=RUNNER)

    assert run.artifacts == {"model.skops": DIGEST}


def test_an_artifact_name_is_recorded_once() -> None:
    run = _running_run()
    run.record_artifact("model.skops", DIGEST, 100, "application/octet-stream", actor=RUNNER)

    with pytest.raises(ArtifactAlreadyRecorded) as caught:
        run.record_artifact("model.skops", "sha256:" + "cd" * 32, 100, "application/octet-stream", actor=RUNNER)

    assert caught.value.field == "name"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 201])
def test_an_artifact_name_that_is_empty_too_long_or_a_path_is_refused(name: str) -> None:
    run = _running_run()

    with pytest.raises(InvalidPayload):
        run.record_artifact(name, DIGEST, 100, "application/octet-stream", actor=RUNNER)


def test_an_artifact_without_a_sha256_digest_is_refused() -> None:
    run = _running_run()

    with pytest.raises(InvalidPayload):
        run.record_artifact("model.skops", "md5:abc", 100, "application/octet-stream", actor=RUNNER)


# -- Finishing ---------------------------------------------------------------------------


def test_a_finished_run_has_the_status_it_finished_with() -> None:
    run = _running_run()

    run.finish("failed", "boom", actor=RUNNER)

    assert run.status is RunStatus.FAILED
    assert run.finished


def test_the_finished_event_carries_the_status_as_a_plain_string() -> None:
    run = _running_run()
    run.collect_events()

    run.finish(RunStatus.SUCCEEDED, None, actor=RUNNER)

    (finished,) = run.collect_events()
    assert isinstance(finished, Run.Finished)
    assert type(finished.status) is str
    assert finished.status == "succeeded"


def test_a_run_nobody_claimed_can_be_cancelled() -> None:
    run = _run()

    run.finish("cancelled", "not needed", actor=ALICE)

    assert run.status is RunStatus.CANCELLED


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_run_nobody_claimed_can_only_be_cancelled(status: str) -> None:
    run = _run()

    with pytest.raises(UnclaimedRunOnlyCancellable) as caught:
        run.finish(status, None, actor=ALICE)

    assert caught.value.field == "status"


def test_a_run_cannot_finish_with_a_status_that_is_not_an_end() -> None:
    run = _running_run()

    with pytest.raises(InvalidPayload) as caught:
        run.finish("running", None, actor=RUNNER)

    assert caught.value.field == "status"


def test_a_finished_run_records_nothing_more() -> None:
    run = _succeeded_run()

    with pytest.raises(RunAlreadyFinished):
        run.log_metrics([{"key": "loss", "value": 0.1}], actor=RUNNER)


def test_a_finished_run_cannot_finish_again() -> None:
    run = _succeeded_run()

    with pytest.raises(RunAlreadyFinished):
        run.finish("failed", "late", actor=RUNNER)


def test_an_abandoned_run_records_nothing_more() -> None:
    run = _running_run()
    run.abandon("r1", "no heartbeat", actor=ALICE)

    with pytest.raises(RunAlreadyFinished):
        run.record_artifact("model.skops", DIGEST, 1, "application/octet-stream", actor=RUNNER)


def test_a_run_rebuilt_from_its_events_has_the_same_state() -> None:
    run = _running_run()
    run.log_params({"max_iter": 100}, actor=RUNNER)
    run.record_artifact("model.skops", DIGEST, 100, "application/octet-stream", actor=RUNNER)
    run.finish("succeeded", None, actor=RUNNER)

    rebuilt: Aggregate | None = None
    for recorded in run.collect_events():
        rebuilt = recorded.mutate(rebuilt)

    assert isinstance(rebuilt, Run)
    assert rebuilt.status is RunStatus.SUCCEEDED
    assert (rebuilt.params, rebuilt.artifacts, rebuilt.runner_id) == (run.params, run.artifacts, "r1")


# -- Reproductions and re-execution --------------------------------------------------------


def test_a_matching_reproduction_is_recorded_as_verified() -> None:
    run = _succeeded_run()

    run.record_reproduction("run-2", True, "metrics", 1e-6, {}, actor=ALICE)

    assert run.verdicts == {"run-2": "verified"}


def test_a_differing_reproduction_is_recorded_as_diverged() -> None:
    run = _succeeded_run()

    run.record_reproduction("run-2", False, "metrics", 1e-6, {"accuracy": [0.9, 0.8]}, actor=ALICE)

    assert run.verdicts == {"run-2": "diverged"}


def test_only_a_succeeded_run_can_be_reproduced() -> None:
    run = _running_run()

    with pytest.raises(RunNotSucceeded):
        run.record_reproduction("run-2", True, "metrics", 1e-6, {}, actor=ALICE)


def test_a_reproduction_gets_one_verdict() -> None:
    run = _succeeded_run()
    run.record_reproduction("run-2", True, "metrics", 1e-6, {}, actor=ALICE)

    with pytest.raises(ReproductionAlreadyJudged):
        run.record_reproduction("run-2", False, "metrics", 1e-6, {}, actor=ALICE)


def test_check_succeeded_refuses_with_the_callers_detail_and_field() -> None:
    run = _running_run()

    with pytest.raises(RunNotSucceeded) as caught:
        run.check_succeeded("register versions from succeeded runs", field="run_id")

    assert (caught.value.detail, caught.value.field) == ("register versions from succeeded runs", "run_id")


def test_a_reproduction_repeats_the_recorded_inputs_and_points_at_the_original() -> None:
    original = _succeeded_run()

    again = original.request_reproduction(ALICE)

    assert again.reproduces == str(original.id)
    assert again.status is RunStatus.REQUESTED
    assert (again.name, again.pipeline_id, again.spec_digest, again.seed, again.params) == (
        "reproduce train",
        original.pipeline_id,
        original.spec_digest,
        original.seed,
        original.params,
    )


def test_a_retry_repeats_the_run_without_pointing_at_it() -> None:
    original = _succeeded_run()

    again = original.request_retry(ALICE)

    assert (again.name, again.reproduces) == ("retry train", None)


def test_a_retraining_uses_newer_datasets_and_overridden_params() -> None:
    original = _succeeded_run()

    again = original.request_retry(ALICE, params={"C": 0.5}, datasets=["dataset-2"], purpose="retrain on drift:")

    assert (again.name, again.dataset_version_ids, again.params) == (
        "retrain on drift: train",
        ["dataset-2"],
        {"C": 0.5},
    )


def test_a_client_reported_run_cannot_be_executed_again() -> None:
    original = _run("client")

    with pytest.raises(RunNotReExecutable):
        original.request_retry(ALICE)


def test_a_reproduction_asks_for_the_device_the_run_executed_on_not_auto_again() -> None:
    run = _run(device="auto")
    run.claim("r1", "gpu-host", actor=RUNNER)
    run.capture_environment({"python": "3.11"}, DIGEST, "cuda", None, actor=RUNNER)
    run.finish("succeeded", None, actor=RUNNER)

    reproduction = run.request_reproduction(ALICE)
    retry = run.request_retry(ALICE)

    assert (reproduction.device, retry.device) == ("cuda", "auto")


def test_a_run_taken_over_by_another_runner_is_attested_by_that_runner_only() -> None:
    run = _running_run()
    run.reattach("r2", "r1", actor=RUNNER)

    with pytest.raises(RunNotHeldByRunner):
        run.attest("r1", "p1", "k1", {"runner_id": "r1"}, "sig", None, actor=RUNNER)
    run.attest("r2", "p1", "k1", {"runner_id": "r2"}, "sig", None, actor=RUNNER)

    assert (run.runner_id, run.claimed_by) == ("r2", "r1")
    assert run.attestation is not None and run.attestation["statement"] == {"runner_id": "r2"}
    with pytest.raises(RunAlreadyFinished):
        run.attest("r2", "p1", "k1", {"runner_id": "r2"}, "sig", None, actor=RUNNER)
