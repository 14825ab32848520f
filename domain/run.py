"""Run: one training run, requested for a runner or reported by a client that
trains elsewhere. Either way it records the same events: parameters, metrics,
artifacts and how it ended."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.annotations import check_description
from domain.dataset import check_digest
from domain.errors import (
    ArtifactAlreadyRecorded,
    InvalidPayload,
    ParamAlreadyRecorded,
    ReproductionAlreadyJudged,
    RunAlreadyClaimed,
    RunAlreadyFinished,
    RunDeleted,
    RunNeedsPipeline,
    RunNotClaimed,
    RunNotDeleted,
    RunNotForRunners,
    RunNotHeldByRunner,
    RunNotReExecutable,
    RunNotSucceeded,
    UnclaimedRunOnlyCancellable,
)
from domain.usage import ResourcesAlreadyRecorded, check_resources


class RunStatus(StrEnum):
    """Where a run stands. The values are the strings that events, API responses
    and read models carry, so a status compares equal to its stored string."""

    REQUESTED = "requested"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"

    @classmethod
    def at_start(cls, mode: str) -> RunStatus:
        """A run for runners waits for a claim; a client-reported run is running from the start."""
        return cls.REQUESTED if mode == "runner" else cls.RUNNING


MODES = ("runner", "client")
ACTIVE_STATES = (RunStatus.CLAIMED, RunStatus.RUNNING)
DEVICES = ("auto", "cpu", "cuda")
END_STATES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
METRIC_KEY_MAX = 250
TAG_VALUE_MAX = 8000
NAME_MAX = 200


def check_metric(metric: dict[str, Any], index: int) -> dict[str, Any]:
    """A metric point is {key, value, step, timestamp?} with a finite value."""
    field = f"metrics.{index}"
    key = metric.get("key")
    if not isinstance(key, str) or not key or len(key) > METRIC_KEY_MAX:
        raise InvalidPayload(f"{field}.key must be 1 to {METRIC_KEY_MAX} characters", field=f"{field}.key")
    value = metric.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidPayload(f"{field}.value must be a finite number", field=f"{field}.value")
    step = metric.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidPayload(f"{field}.step must be a non-negative integer", field=f"{field}.step")
    point: dict[str, Any] = {"key": key, "value": float(value), "step": step}
    if metric.get("timestamp") is not None:
        point["timestamp"] = str(metric["timestamp"])
    return point


class Run(LedgerAggregate):
    """A training run and everything it recorded."""

    class Requested(Aggregate.Created, LedgerAggregate.Event):
        """A run was requested (mode ``runner``) or started by a client (mode ``client``)."""

        TOPIC = "mlledger.run.Requested.v1"
        name: str
        mode: str
        pipeline_id: str | None
        pipeline_version: int | None
        spec_digest: str | None
        dataset_version_ids: list[str]
        code_version_id: str | None
        params: dict[str, Any]
        seed: int
        device: str
        reproduces: str | None

    class Claimed(LedgerAggregate.Event):
        """A runner took the run (exactly one can: the claim is an optimistic append)."""

        TOPIC = "mlledger.run.Claimed.v1"
        runner_id: str
        host: str

    class EnvironmentCaptured(LedgerAggregate.Event):
        """What the run executes on, recorded before execution starts."""

        TOPIC = "mlledger.run.EnvironmentCaptured.v1"
        environment: dict[str, Any]
        environment_digest: str
        device: str
        device_note: str | None

    class Reattached(LedgerAggregate.Event):
        """Another runner took over a run whose runner went silent while its job kept executing."""

        TOPIC = "mlledger.run.Reattached.v1"
        runner_id: str
        previous_runner_id: str

    class ExecutionAttested(LedgerAggregate.Event):
        """The runner's signed execution statement, checked against its registered key before recording."""

        TOPIC = "mlledger.run.ExecutionAttested.v1"
        principal_id: str
        key_id: str
        statement: dict[str, Any]
        signature: str
        node_environment: dict[str, Any] | None

    class Abandoned(LedgerAggregate.Event):
        """The runner stopped heartbeating; the run will not finish."""

        TOPIC = "mlledger.run.Abandoned.v1"
        runner_id: str
        reason: str

    class ReproductionVerified(LedgerAggregate.Event):
        """A re-execution matched this run."""

        TOPIC = "mlledger.run.ReproductionVerified.v1"
        reproduction_run_id: str
        method: str
        tolerance: float
        details: dict[str, Any]

    class ReproductionDiverged(LedgerAggregate.Event):
        """A re-execution did not match this run; the differences are recorded."""

        TOPIC = "mlledger.run.ReproductionDiverged.v1"
        reproduction_run_id: str
        differences: dict[str, Any]

    class ParamsLogged(LedgerAggregate.Event):
        """Parameters were recorded (each key once)."""

        TOPIC = "mlledger.run.ParamsLogged.v1"
        params: dict[str, Any]

    class MetricsLogged(LedgerAggregate.Event):
        """Metric points were recorded."""

        TOPIC = "mlledger.run.MetricsLogged.v1"
        metrics: list[dict[str, Any]]

    class ArtifactRecorded(LedgerAggregate.Event):
        """An artifact (content-addressed) was produced."""

        TOPIC = "mlledger.run.ArtifactRecorded.v1"
        name: str
        digest: str
        size: int
        media_type: str

    class ResourcesRecorded(LedgerAggregate.Event):
        """What the execution used (``domain.usage``): CPU, memory, wall and GPU time, host, backend."""

        TOPIC = "mlledger.run.ResourcesRecorded.v1"
        resources: dict[str, Any]

    class Finished(LedgerAggregate.Event):
        """The run ended."""

        TOPIC = "mlledger.run.Finished.v1"
        status: str
        error: str | None

    class Filed(LedgerAggregate.Event):
        """The run was filed under an experiment (``domain.experiment``), once, when it started."""

        TOPIC = "mlledger.run.Filed.v1"
        experiment_id: str

    class TagsSet(LedgerAggregate.Event):
        """Tags were set (string annotations; a later value replaces an earlier one)."""

        TOPIC = "mlledger.run.TagsSet.v1"
        tags: dict[str, str]

    class DescriptionSet(LedgerAggregate.Event):
        """The run's description was set (empty: cleared)."""

        TOPIC = "mlledger.run.DescriptionSet.v1"
        description: str

    class Deleted(LedgerAggregate.Event):
        """The run was marked deleted: a tombstone, its events stay on the ledger."""

        TOPIC = "mlledger.run.Deleted.v1"

    class Restored(LedgerAggregate.Event):
        """A deleted run was restored."""

        TOPIC = "mlledger.run.Restored.v1"

    class InputsLogged(LedgerAggregate.Event):
        """Datasets (by name and digest, with where they came from) and logged models the run used."""

        TOPIC = "mlledger.run.InputsLogged.v1"
        datasets: list[dict[str, Any]]
        model_ids: list[str]

    class OutputsLogged(LedgerAggregate.Event):
        """Logged models the run produced, each at a step."""

        TOPIC = "mlledger.run.OutputsLogged.v1"
        models: list[dict[str, Any]]

    @event(Requested)
    def __init__(
        self,
        name: str,
        mode: str,
        pipeline_id: str | None,
        pipeline_version: int | None,
        spec_digest: str | None,
        dataset_version_ids: list[str],
        code_version_id: str | None,
        params: dict[str, Any],
        seed: int,
        device: str,
        reproduces: str | None,
        actor: str,
    ) -> None:
        self.name = name
        self.mode = mode
        self.pipeline_id = pipeline_id
        self.pipeline_version = pipeline_version
        self.spec_digest = spec_digest
        self.dataset_version_ids = list(dataset_version_ids)
        self.code_version_id = code_version_id
        self.params = dict(params)
        self.seed = seed
        self.device = device
        self.submitted_by = actor
        self.status = RunStatus.at_start(mode)
        self.artifacts: dict[str, str] = {}
        self.metric_points = 0
        self.reproduces = reproduces
        self.runner_id: str | None = None
        self.claimed_by: str | None = None
        self.attestation: dict[str, Any] | None = None
        self.environment: dict[str, Any] = {}
        self.environment_digest: str | None = None
        self.executed_on: str | None = None
        self.verdicts: dict[str, str] = {}
        self.resources: dict[str, Any] | None = None
        self.experiment_id: str | None = None
        self.tags: dict[str, str] = {}
        self.description = ""
        self.deleted = False
        self.latest_metrics: dict[str, dict[str, Any]] = {}
        self.dataset_inputs: list[dict[str, Any]] = []
        self.model_inputs: list[str] = []
        self.model_outputs: list[dict[str, Any]] = []

    @staticmethod
    def check_request(mode: str, seed: int, device: str, name: str, pipeline: str | None) -> None:
        """Validate the request's own fields; a run for a runner names its pipeline."""
        if mode not in MODES:
            raise InvalidPayload(f"mode must be one of {', '.join(MODES)}", field="mode")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise InvalidPayload("seed must be an integer in [0, 2**32)", field="seed")
        if device not in DEVICES:
            raise InvalidPayload(f"device must be one of {', '.join(DEVICES)}", field="device")
        if len(name) > NAME_MAX:
            raise InvalidPayload(f"name must be at most {NAME_MAX} characters", field="name")
        if mode == "runner" and pipeline is None:
            raise RunNeedsPipeline("a run for a runner needs a pipeline", field="pipeline")

    @property
    def finished(self) -> bool:
        """True once the run ended (abandoned included)."""
        return self.status in (*END_STATES, RunStatus.ABANDONED)

    @property
    def awaits_runner(self) -> bool:
        """True while a runner may claim the run: requested for runners, not yet taken."""
        return self.mode == "runner" and self.status == RunStatus.REQUESTED

    def is_active_under(self, runner_id: str) -> bool:
        """True while ``runner_id`` holds the run, claimed or running."""
        return self.status in ACTIVE_STATES and self.runner_id == runner_id

    def check_claimable(self) -> None:
        """A run is claimed once, and only a run for runners is claimed at all."""
        if self.mode != "runner":
            raise RunNotForRunners("a client-reported run is not executed by runners")
        if self.status != RunStatus.REQUESTED:
            raise RunAlreadyClaimed(f"the run is {self.status}; only requested runs can be claimed")

    def claim(self, runner_id: str, host: str, actor: str) -> None:
        """Take a requested run; refuse one already taken."""
        self.check_claimable()
        self._claim(runner_id=runner_id, host=host, actor=actor)

    @event(Claimed)
    def _claim(self, runner_id: str, host: str, actor: str) -> None:
        self.status = RunStatus.CLAIMED
        self.runner_id = runner_id
        self.claimed_by = runner_id

    def reattach(self, runner_id: str, previous_runner_id: str, actor: str) -> None:
        """Hand an active run from a silent runner to ``runner_id`` (its job goes on executing)."""
        if not self.is_active_under(previous_runner_id):
            raise RunNotHeldByRunner(
                f"the run is {self.status} by {self.runner_id}, not active under {previous_runner_id}"
            )
        self._reattach(runner_id=runner_id, previous_runner_id=previous_runner_id, actor=actor)

    @event(Reattached)
    def _reattach(self, runner_id: str, previous_runner_id: str, actor: str) -> None:
        self.runner_id = runner_id

    def attest(
        self,
        runner_id: str,
        principal_id: str,
        key_id: str,
        statement: dict[str, Any],
        signature: str,
        node_environment: dict[str, Any] | None,
        actor: str,
    ) -> None:
        """Record the runner's verified execution statement (once, while the run is active under it)."""
        if not self.is_active_under(runner_id):
            raise RunNotHeldByRunner(f"the run is {self.status} by {self.runner_id}, not active under {runner_id}")
        if self.attestation is not None:
            raise RunAlreadyFinished("this run's execution is already attested")
        self._attest(
            principal_id=principal_id,
            key_id=key_id,
            statement=statement,
            signature=signature,
            node_environment=node_environment,
            actor=actor,
        )

    @event(ExecutionAttested)
    def _attest(
        self,
        principal_id: str,
        key_id: str,
        statement: dict[str, Any],
        signature: str,
        node_environment: dict[str, Any] | None,
        actor: str,
    ) -> None:
        self.attestation = {"principal_id": principal_id, "key_id": key_id, "statement": statement}

    def capture_environment(
        self, environment: dict[str, Any], digest: str, device: str, device_note: str | None, actor: str
    ) -> None:
        """Record the environment before execution; the run is running from now on."""
        if self.status != RunStatus.CLAIMED:
            raise RunNotClaimed(f"the environment is captured right after the claim, not when {self.status}")
        self._capture(
            environment=environment, environment_digest=digest, device=device, device_note=device_note, actor=actor
        )

    @event(EnvironmentCaptured)
    def _capture(
        self, environment: dict[str, Any], environment_digest: str, device: str, device_note: str | None, actor: str
    ) -> None:
        self.status = RunStatus.RUNNING
        self.environment = environment
        self.environment_digest = environment_digest
        self.executed_on = device

    def abandon(self, runner_id: str, reason: str, actor: str) -> None:
        """Mark a claimed or running run abandoned (its runner went silent)."""
        if not self.is_active_under(runner_id):
            raise RunNotHeldByRunner(f"the run is {self.status} by {self.runner_id}, not active under {runner_id}")
        self._abandon(runner_id=runner_id, reason=reason, actor=actor)

    @event(Abandoned)
    def _abandon(self, runner_id: str, reason: str, actor: str) -> None:
        self.status = RunStatus.ABANDONED

    def record_reproduction(
        self,
        reproduction_run_id: str,
        matched: bool,
        method: str,
        tolerance: float,
        details: dict[str, Any],
        actor: str,
    ) -> None:
        """Record whether a re-execution matched this (succeeded) run."""
        self.check_succeeded("only a succeeded run can be reproduced")
        if reproduction_run_id in self.verdicts:
            raise ReproductionAlreadyJudged("this reproduction already has a verdict")
        if matched:
            self._verified(
                reproduction_run_id=reproduction_run_id,
                method=method,
                tolerance=tolerance,
                details=details,
                actor=actor,
            )
        else:
            self._diverged(reproduction_run_id=reproduction_run_id, differences=details, actor=actor)

    @event(ReproductionVerified)
    def _verified(
        self, reproduction_run_id: str, method: str, tolerance: float, details: dict[str, Any], actor: str
    ) -> None:
        self.verdicts[reproduction_run_id] = "verified"

    @event(ReproductionDiverged)
    def _diverged(self, reproduction_run_id: str, differences: dict[str, Any], actor: str) -> None:
        self.verdicts[reproduction_run_id] = "diverged"

    def check_succeeded(self, detail: str, field: str | None = None) -> None:
        """Refuse, with ``detail``, unless the run succeeded."""
        if self.status != RunStatus.SUCCEEDED:
            raise RunNotSucceeded(detail, field=field)

    def check_open(self) -> None:
        """A finished (or abandoned) run records nothing more."""
        self.check_not_deleted()
        if self.finished:
            raise RunAlreadyFinished(f"the run already {self.status}; nothing more can be recorded")

    def log_params(self, params: dict[str, Any], actor: str) -> None:
        """Record parameters; a key keeps its first value forever."""
        self.check_open()
        if not params:
            raise InvalidPayload("params must not be empty", field="params")
        for key, value in params.items():
            if key in self.params and self.params[key] != value:
                raise ParamAlreadyRecorded(
                    f"parameter {key!r} was already recorded as {self.params[key]!r}", field=f"params.{key}"
                )
        new = {k: v for k, v in params.items() if k not in self.params}
        if new:
            self._log_params(params=new, actor=actor)

    @event(ParamsLogged)
    def _log_params(self, params: dict[str, Any], actor: str) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: list[dict[str, Any]], actor: str) -> None:
        """Record a batch of metric points."""
        self.check_open()
        if not metrics:
            raise InvalidPayload("metrics must not be empty", field="metrics")
        self._log_metrics(metrics=[check_metric(m, i) for i, m in enumerate(metrics)], actor=actor)

    @event(MetricsLogged)
    def _log_metrics(self, metrics: list[dict[str, Any]], actor: str) -> None:
        self.metric_points += len(metrics)
        for point in metrics:
            latest = self.latest_metrics.get(point["key"])
            if latest is None or point["step"] >= latest["step"]:
                self.latest_metrics[point["key"]] = point

    def record_artifact(self, name: str, digest: str, size: int, media_type: str, actor: str) -> None:
        """Record an artifact by digest; a name is recorded once."""
        self.check_open()
        check_digest(digest)
        if not name or "/" in name or len(name) > NAME_MAX:
            raise InvalidPayload("artifact name must be 1 to 200 characters without '/'", field="name")
        if name in self.artifacts:
            raise ArtifactAlreadyRecorded(f"artifact {name!r} was already recorded", field="name")
        self._record_artifact(name=name, digest=digest, size=size, media_type=media_type, actor=actor)

    @event(ArtifactRecorded)
    def _record_artifact(self, name: str, digest: str, size: int, media_type: str, actor: str) -> None:
        self.artifacts[name] = digest

    def finish(self, status: str, error: str | None, actor: str) -> None:
        """End the run (a requested run can only be cancelled)."""
        self.check_open()
        if self.status == RunStatus.REQUESTED and status != RunStatus.CANCELLED:
            raise UnclaimedRunOnlyCancellable("a run nobody has claimed can only be cancelled", field="status")
        if status not in END_STATES:
            raise InvalidPayload(f"status must be one of {', '.join(END_STATES)}", field="status")
        self._finish(status=RunStatus(status).value, error=error, actor=actor)

    @event(Finished)
    def _finish(self, status: str, error: str | None, actor: str) -> None:
        self.status = RunStatus(status)

    def file_under(self, experiment_id: str, actor: str) -> None:
        """File the new run under an experiment (once)."""
        if self.experiment_id is not None:
            raise InvalidPayload("the run is already filed under an experiment", field="experiment_id")
        self._file(experiment_id=experiment_id, actor=actor)

    @event(Filed)
    def _file(self, experiment_id: str, actor: str) -> None:
        self.experiment_id = experiment_id

    def check_not_deleted(self) -> None:
        """A deleted run takes nothing new until it is restored."""
        if self.deleted:
            raise RunDeleted("the run is deleted; restore it first")

    def set_tags(self, tags: dict[str, str], actor: str) -> None:
        """Set tags; allowed after the run ended too (tags annotate, they are not results)."""
        self.check_not_deleted()
        for key, value in tags.items():
            if not isinstance(key, str) or not key or len(key) > METRIC_KEY_MAX:
                raise InvalidPayload(f"tag keys must be 1 to {METRIC_KEY_MAX} characters", field="tags")
            if not isinstance(value, str) or len(value) > TAG_VALUE_MAX:
                raise InvalidPayload(f"tag {key!r} must be a string of at most {TAG_VALUE_MAX} chars", field="tags")
        changed = {k: v for k, v in tags.items() if self.tags.get(k) != v}
        if changed:
            self._set_tags(tags=changed, actor=actor)

    @event(TagsSet)
    def _set_tags(self, tags: dict[str, str], actor: str) -> None:
        self.tags.update(tags)

    def describe(self, description: str, actor: str) -> None:
        """Set the description; allowed after the run ended, like tags (nothing recorded when unchanged)."""
        self.check_not_deleted()
        if check_description(description) != self.description:
            self._describe(description=description, actor=actor)

    @event(DescriptionSet)
    def _describe(self, description: str, actor: str) -> None:
        self.description = description

    def delete(self, actor: str) -> None:
        """Mark the run deleted (a tombstone: nothing is erased)."""
        self.check_not_deleted()
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: str) -> None:
        self.deleted = True

    def restore(self, actor: str) -> None:
        """Undo a deletion."""
        if not self.deleted:
            raise RunNotDeleted("the run is not deleted", field="run_id")
        self._restore(actor=actor)

    @event(Restored)
    def _restore(self, actor: str) -> None:
        self.deleted = False

    def log_inputs(self, datasets: list[dict[str, Any]], model_ids: list[str], actor: str) -> None:
        """Record the datasets (each {name, digest, source_type, source, schema?, profile?, tags}) and logged
        models the run used; one already recorded (same name and digest, or same model) is not repeated."""
        self.check_not_deleted()
        known = {(d["name"], d["digest"]) for d in self.dataset_inputs}
        new_datasets = [d for d in datasets if (d["name"], d["digest"]) not in known]
        new_models = [m for m in dict.fromkeys(model_ids) if m not in self.model_inputs]
        if new_datasets or new_models:
            self._log_inputs(datasets=new_datasets, model_ids=new_models, actor=actor)

    @event(InputsLogged)
    def _log_inputs(self, datasets: list[dict[str, Any]], model_ids: list[str], actor: str) -> None:
        self.dataset_inputs.extend(datasets)
        self.model_inputs.extend(model_ids)

    def log_outputs(self, models: list[dict[str, Any]], actor: str) -> None:
        """Record logged models (each {model_id, step}) the run produced."""
        self.check_not_deleted()
        known = {(m["model_id"], m["step"]) for m in self.model_outputs}
        new = [m for m in models if (m["model_id"], m["step"]) not in known]
        if new:
            self._log_outputs(models=new, actor=actor)

    @event(OutputsLogged)
    def _log_outputs(self, models: list[dict[str, Any]], actor: str) -> None:
        self.model_outputs.extend(models)

    def record_resources(self, resources: dict[str, Any], actor: str) -> None:
        """Record what the execution used, once; also after the run ended (a cancelled run still cost)."""
        if self.mode == "runner" and self.runner_id is None:
            raise RunNotClaimed("no runner executed this run, so it used no resources", field="resources")
        if self.resources is not None:
            raise ResourcesAlreadyRecorded("the run's resources were already recorded", field="resources")
        self._record_resources(resources=check_resources(resources), actor=actor)

    @event(ResourcesRecorded)
    def _record_resources(self, resources: dict[str, Any], actor: str) -> None:
        self.resources = dict(resources)

    def check_re_executable(self) -> None:
        """Only a run a runner executed from a pipeline can be executed again."""
        if self.mode != "runner" or self.pipeline_id is None:
            raise RunNotReExecutable("only runs executed by runners from a pipeline can be re-executed")

    def request_reproduction(
        self,
        actor: str,
        params: dict[str, Any] | None = None,
        datasets: list[str] | None = None,
        purpose: str | None = None,
    ) -> Run:
        """A new run of the recorded inputs whose verdict is recorded on this run, on the device this
        run executed on (``cuda`` stays ``cuda``; ``auto`` is not asked again)."""
        return self._again(
            purpose or "reproduce", params, datasets, reproduces=str(self.id), actor=actor, device=self.executed_on
        )

    def request_retry(
        self,
        actor: str,
        params: dict[str, Any] | None = None,
        datasets: list[str] | None = None,
        purpose: str | None = None,
    ) -> Run:
        """A new run of the recorded inputs (a retry, or a retraining on newer ``datasets``)."""
        return self._again(purpose or "retry", params, datasets, reproduces=None, actor=actor)

    def _again(
        self,
        purpose: str,
        params: dict[str, Any] | None,
        datasets: list[str] | None,
        reproduces: str | None,
        actor: str,
        device: str | None = None,
    ) -> Run:
        """A runner run with this run's pipeline, code, seed and device (or ``device``); ``params`` override."""
        self.check_re_executable()
        return Run(
            name=f"{purpose} {self.name or self.id}"[:NAME_MAX],
            mode="runner",
            pipeline_id=self.pipeline_id,
            pipeline_version=self.pipeline_version,
            spec_digest=self.spec_digest,
            dataset_version_ids=datasets if datasets is not None else self.dataset_version_ids,
            code_version_id=self.code_version_id,
            params={**self.params, **(params or {})},
            seed=self.seed,
            device=device or self.device,
            reproduces=reproduces,
            actor=actor,
        )
