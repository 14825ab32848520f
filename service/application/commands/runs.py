"""Commands runners use: claim, record the environment, abandon, reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.errors import RunAlreadyClaimed, VersionConflict
from domain.run import Run, RunStatus
from service.application.ledger_core import LedgerCore, Written


@dataclass(frozen=True)
class Attestation:
    """A runner's execution statement whose signature the service has checked."""

    principal_id: str
    key_id: str
    statement: dict[str, Any]
    signature: str
    node_environment: dict[str, Any] | None = None


class RunnerCommands(LedgerCore):
    """Commands about executing runs."""

    def claim_run(self, run_id: str, runner_id: str, host: str) -> Written:
        """Claim a requested run; :class:`RunAlreadyClaimed` if another runner won."""
        run: Run = self.get(run_id, Run)
        run.claim(runner_id, host, actor=f"runner:{runner_id}")
        try:
            return self._written(run)
        except VersionConflict:
            raise RunAlreadyClaimed(f"run {run_id} was claimed by another runner") from None

    def claim_and_capture(
        self,
        run_id: str,
        runner_id: str,
        host: str,
        environment: dict[str, Any],
        digest: str,
        device: str,
        note: str | None,
        run: Run | None = None,
    ) -> Written:
        """Claim a run and record its environment in one append (one commit, one lock).

        ``run`` may be the run as the caller just loaded it (saves reading it again);
        if it is stale, the append loses the race like any other.
        """
        run = run if run is not None and str(run.id) == run_id else self.get(run_id, Run)
        actor = f"runner:{runner_id}"
        run.claim(runner_id, host, actor=actor)
        run.capture_environment(environment, digest, device, note, actor=actor)
        try:
            return self._written(run)
        except VersionConflict:
            raise RunAlreadyClaimed(f"run {run_id} was claimed by another runner") from None

    def record_execution(
        self, run_id: str, runner_id: str, metrics: list[dict[str, Any]], artifacts: list[tuple[str, str, int, str]]
    ) -> Written:
        """Record a successful execution's final metrics, its artifacts and its end in one append."""
        run: Run = self.get(run_id, Run)
        actor = f"runner:{runner_id}"
        if metrics:
            run.log_metrics(metrics, actor=actor)
        for name, digest, size, media_type in artifacts:
            run.record_artifact(name, digest, size, media_type, actor=actor)
        run.finish(RunStatus.SUCCEEDED, None, actor=actor)
        return self._written(run)

    def record_environment(
        self, run_id: str, runner_id: str, environment: dict[str, Any], digest: str, device: str, note: str | None
    ) -> Written:
        """Record the environment a claimed run will execute in."""
        run: Run = self.get(run_id, Run)
        run.capture_environment(environment, digest, device, note, actor=f"runner:{runner_id}")
        return self._written(run)

    def reattach_run(self, run_id: str, runner_id: str, previous_runner_id: str, actor: str) -> Written:
        """Hand an active run from a silent runner to ``runner_id``; :class:`RunAlreadyClaimed` if another won."""
        run: Run = self.get(run_id, Run)
        run.reattach(runner_id, previous_runner_id, actor=actor)
        try:
            return self._written(run)
        except VersionConflict:
            raise RunAlreadyClaimed(f"run {run_id} was taken over by another runner") from None

    def record_attested(
        self,
        run: Run,
        attestation: Attestation,
        metrics: list[dict[str, Any]],
        actor: str,
    ) -> Written:
        """Record a verified execution statement and what it vouches for in one append: the node's
        environment, the final metric points, the outputs as artifacts, and how the run ended."""
        statement = attestation.statement
        runner_id = str(statement["runner_id"])
        run.attest(
            runner_id,
            attestation.principal_id,
            attestation.key_id,
            statement,
            attestation.signature,
            attestation.node_environment,
            actor=actor,
        )
        if statement["resources"]:
            run.record_resources(statement["resources"], actor=actor)
        if metrics:
            run.log_metrics(metrics, actor=actor)
        for output in statement["outputs"]:
            run.record_artifact(output["name"], output["digest"], output["size"], output["media_type"], actor=actor)
        if statement["outcome"] == "succeeded":
            run.finish(RunStatus.SUCCEEDED, None, actor=actor)
        else:
            run.finish(RunStatus.FAILED, statement["error"], actor=actor)
        return self._written(run)

    def record_resources(self, run_id: str, resources: dict[str, Any], actor: str) -> Written:
        """Record what a run's execution used (once per run; ``domain.usage`` checks the figures)."""
        run: Run = self.get(run_id, Run)
        run.record_resources(resources, actor=actor)
        return self._written(run)

    def abandon_run(self, run_id: str, runner_id: str, reason: str, actor: str) -> Written:
        """Mark a run abandoned because its runner stopped heartbeating."""
        run: Run = self.get(run_id, Run)
        run.abandon(runner_id, reason, actor=actor)
        return self._written(run)

    def request_again(
        self,
        run_id: str,
        actor: str,
        *,
        reproduce: bool,
        params: dict[str, Any] | None = None,
        datasets: list[str] | None = None,
        purpose: str | None = None,
    ) -> Written:
        """A new runner run with the recorded inputs (a reproduction, a retry, or a retraining
        on newer ``datasets``); ``params`` override."""
        original: Run = self.get(run_id, Run)
        again = original.request_reproduction if reproduce else original.request_retry
        return self._written(again(actor, params=params, datasets=datasets, purpose=purpose))

    def record_reproduction(
        self,
        original_id: str,
        reproduction_id: str,
        matched: bool,
        method: str,
        tolerance: float,
        details: dict[str, Any],
        actor: str,
    ) -> Written:
        """Record the verdict of a reproduction on the original run."""
        original: Run = self.get(original_id, Run)
        original.record_reproduction(reproduction_id, matched, method, tolerance, details, actor=actor)
        return self._written(original)
