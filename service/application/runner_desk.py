"""The ledger service's side of execution: what runners may ask and what it records for them.

Runners are untrusted compute. They hold no ledger key and no database
credentials; they reach the ledger through this desk (over HTTP, or in the
service's own process for the embedded runner) to list requested runs, claim
one and receive its work order, fetch the run's inputs by digest, upload its
outputs, heartbeat, and hand in a signed execution statement. The desk checks
every statement against the runner's registered key and the run's record
before anything is recorded, and judges reproductions itself.

A work order carries a run token: an HMAC, under a secret only the service
holds, of the run id and the runner that first claimed it. Whoever executes the
run (a Ray job on another node) downloads that run's inputs and uploads its
outputs with it, and nothing else; it stops working when the run ends. The
token is derived, not stored, so a runner that re-attaches to a job another
runner started receives the same token the job already holds.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine

from domain.code import CodeVersion
from domain.dataset import DatasetVersion
from domain.environment import environment_digest
from domain.errors import (
    Forbidden,
    InvalidPayload,
    InvalidStatementSignature,
    LedgerError,
    NotFound,
    RunAlreadyClaimed,
    RunNotForRunners,
    RunNotHeldByRunner,
    VersionConflict,
)
from domain.execution import check_statement, metrics_digest, statement_message
from domain.integrity.keys import load_public_key_pem, verify_signature
from domain.pipeline import Pipeline
from domain.principal import Principal
from domain.run import ACTIVE_STATES, Run, RunStatus
from projections.registry import reg_runs
from service.application import heartbeats
from service.application.commands.runs import Attestation
from service.application.ledger import Ledger
from service.application.ledger_core import Written
from service.application.reproduction import compare_runs
from service.common.private_files import replace_private
from service.store.blobs import BlobStore, BlobTampered

log = logging.getLogger(__name__)
TOKEN_SECRET_FILE = "run-token.key"  # noqa: S105 - a file name, not a secret
REQUESTED_TOPIC = Run.Requested.TOPIC
REQUESTED_VERSION = 1
"""A run's version while it awaits a runner: its ``Requested`` event alone."""
REATTACH_GRACE_FACTOR = 10
"""A Ray run whose runner went silent waits this many heartbeat timeouts for another runner to re-attach
before the sweep marks it abandoned."""


class RunTokenRefused(Forbidden):
    """A run token that is not this run's, or whose run is no longer active."""

    title = "Run token refused"


class RunNotYours(Forbidden):
    """A runner asked for a run that none of its principal's runners holds."""

    title = "Not your run"


@functools.lru_cache(maxsize=1024)
def _public_key(pem: str) -> Ed25519PublicKey:
    """A registered key, parsed once (a runner signs every run it executes with the same one)."""
    return load_public_key_pem(pem)


@dataclass(frozen=True)
class Claimant:
    """Who asks: a runner principal (``principal_id``) or the service's own embedded runner (None)."""

    principal_id: str | None
    actor: str


def _load_or_create_secret(keys_dir: Path) -> bytes:
    path = keys_dir / TOKEN_SECRET_FILE
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_private(path, os.urandom(32))
    secret = path.read_bytes()
    if len(secret) != 32:
        raise LedgerError(f"the run token secret {path} is not 32 bytes", field="run_token")
    return secret


class RunnerDesk:
    """Everything a runner may ask of the ledger, with the checks that make runners untrusted."""

    def __init__(
        self,
        ledger: Ledger,
        blobs: BlobStore,
        engine: Engine,
        keys_dir: Path,
        heartbeat_timeout: float,
        read_engine: Engine | None = None,
    ) -> None:
        self.ledger = ledger
        self.read_engine = read_engine
        self.blobs = blobs
        self.engine = engine
        self.heartbeat_timeout = heartbeat_timeout
        self._secret = _load_or_create_secret(keys_dir)
        self._inputs: dict[str, list[dict[str, Any]]] = {}
        self._specs: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self._datasets: dict[str, tuple[str, int, str]] = {}

    # -- run tokens -------------------------------------------------------------
    def token_for(self, run: Run) -> str:
        """The run token of a claimed run."""
        message = f"{run.id}:{run.claimed_by}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def check_token(self, run_id: str, token: str | None) -> Run:
        """The run, when ``token`` is its run token and the run is active; :class:`RunTokenRefused` otherwise."""
        try:
            run: Run = self.ledger.read(run_id, Run)
        except NotFound:
            raise RunTokenRefused("the run token does not open this run") from None
        if not token or run.claimed_by is None or not hmac.compare_digest(self.token_for(run), token):
            raise RunTokenRefused("the run token does not open this run")
        if run.status not in ACTIVE_STATES:
            raise RunTokenRefused(f"the run is {run.status}; its run token no longer opens it")
        return run

    # -- finding and claiming work ------------------------------------------------
    def requested(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Runs requested after notification ``after`` that may still await a runner, and the next cursor.

        Read from the ``Requested`` events themselves (no aggregate is loaded); runs the registry already
        shows claimed or ended are left out. The registry may lag, so a listed run can still be taken: the
        claim says so (409).
        """
        found = list(self.ledger.recorder.select_notifications(after + 1, limit, topics=[REQUESTED_TOPIC]))
        runs: list[dict[str, Any]] = []
        for notification in found:
            requested = self.ledger.mapper.to_domain_event(notification)
            if isinstance(requested, Run.Requested) and requested.mode == "runner":
                run_id = str(notification.originator_id)
                runs.append({"run_id": run_id, "device": requested.device, "seed": requested.seed})
        taken = self._taken([item["run_id"] for item in runs])
        return [item for item in runs if item["run_id"] not in taken], (found[-1].id if found else after)

    def _taken(self, run_ids: list[str]) -> set[str]:
        """Which of ``run_ids`` the registry read model already shows past ``requested``."""
        if not run_ids or self.read_engine is None:
            return set()
        with self.read_engine.connect() as conn:
            rows = conn.execute(
                sa.select(reg_runs.c.id).where(reg_runs.c.id.in_(run_ids), reg_runs.c.status != "requested")
            ).all()
        return {str(row[0]) for row in rows}

    def inputs_of(self, run: Run) -> list[dict[str, Any]]:
        """The run's inputs in order (datasets, then the code archive), each named by digest.

        A claim does not re-hash them (its cost would grow with the data): :meth:`input_path`
        checks a file against its digest each time it is handed out, and a runner checks what
        it received again."""
        run_id = str(run.id)
        cached = self._inputs.get(run_id)
        if cached is not None:
            return cached
        inputs: list[dict[str, Any]] = []
        for dataset_id in run.dataset_version_ids:
            name, number, digest = self._dataset(dataset_id)
            inputs.append({"role": "dataset", "name": f"{name}-v{number}.csv", "digest": digest})
        if run.code_version_id is not None:
            code: CodeVersion = self.ledger.get(run.code_version_id, CodeVersion)
            if code.archive_digest is not None:
                inputs.append({"role": "code", "name": "code-archive", "digest": code.archive_digest})
        for item in inputs:  # sizes only: every byte is checked against its digest when it is handed out
            path = self.blobs.path_of(item["digest"])
            if not path.is_file():
                raise LedgerError(f"input {item['name']}: its file is not in this store", field="inputs")
            item["size"] = path.stat().st_size
        if len(self._inputs) > 10_000:
            self._inputs.clear()
        self._inputs[run_id] = inputs
        return inputs

    def statement_inputs(self, run: Run) -> list[str]:
        """What an execution statement must name as inputs: the spec digest, then every input digest."""
        return [str(run.spec_digest), *(item["digest"] for item in self.inputs_of(run))]

    def work_order(self, run: Run) -> dict[str, Any]:
        """The work order of a claimed run (JSON of ``service.runners.work.WorkOrder``)."""
        assert run.pipeline_id is not None and run.pipeline_version is not None
        kind, spec = self._spec(run.pipeline_id, run.pipeline_version)
        return {
            "run_id": str(run.id),
            "kind": kind,
            "spec": spec,
            "spec_digest": run.spec_digest,
            "params": dict(run.params),
            "seed": run.seed,
            "device": run.device,
            "inputs": self.inputs_of(run),
            "run_token": self.token_for(run),
            "reproduces": run.reproduces,
            "environment_digest": run.environment_digest,
        }

    def _spec(self, pipeline_id: str, number: int) -> tuple[str, dict[str, Any]]:
        """(kind, spec) of a pipeline spec version: immutable once recorded, so read once."""
        key = (pipeline_id, number)
        found = self._specs.get(key)
        if found is None:
            pipeline: Pipeline = self.ledger.get(pipeline_id, Pipeline)
            found = self._specs[key] = (pipeline.kind, pipeline.spec(number))
        return found

    def _dataset(self, dataset_id: str) -> tuple[str, int, str]:
        """(name, number, digest) of a dataset version: immutable, so read once (its file is checked per run)."""
        found = self._datasets.get(dataset_id)
        if found is None:
            dataset: DatasetVersion = self.ledger.get(dataset_id, DatasetVersion)
            found = self._datasets[dataset_id] = (dataset.name, dataset.number, dataset.digest)
        return found

    def claim(
        self,
        claimant: Claimant,
        run_id: str,
        runner_id: str,
        host: str,
        environment: dict[str, Any],
        device: str,
        device_note: str | None,
    ) -> dict[str, Any]:
        """Claim a requested run and record the runner's environment; return its work order.

        :class:`RunAlreadyClaimed` when another runner holds it.
        """
        run: Run = self.ledger.get(run_id, Run)
        self._take(run, runner_id, host, environment, device, device_note)
        return self._order_of_taken(claimant, run, runner_id)

    def _take(
        self, run: Run, runner_id: str, host: str, environment: dict[str, Any], device: str, device_note: str | None
    ) -> None:
        """Claim the run as just loaded and record the environment (a stale ``run`` loses the append
        like any other claim); :class:`RunAlreadyClaimed` when another runner holds it."""
        run_id = str(run.id)
        if run.device == "cuda" and device != "cuda":
            raise RunAlreadyClaimed("the run asks for cuda; this runner has none")
        run.check_claimable()  # before the heartbeat row: a run already taken costs no write
        digest = environment_digest(environment)
        environment = {**environment, "digest": digest}
        heartbeats.beat(self.engine, [run_id], runner_id)  # first, so a claim never goes unwatched
        try:
            self.ledger.claim_and_capture(run_id, runner_id, host, environment, digest, device, device_note, run=run)
        except LedgerError:  # RunAlreadyClaimed and VersionConflict (another runner won) among them
            heartbeats.forget(self.engine, run_id, runner_id)
            raise

    def _order_of_taken(self, claimant: Claimant, run: Run, runner_id: str) -> dict[str, Any]:
        """The work order of a run this runner just claimed; a run whose inputs are gone is marked failed."""
        try:
            return self.work_order(run)  # the claim updated ``run`` in place
        except LedgerError as exc:  # an input is missing or changed on disk: the run cannot execute anywhere
            self.ledger.finish_run(str(run.id), RunStatus.FAILED, exc.detail, actor=claimant.actor)
            heartbeats.forget(self.engine, str(run.id), runner_id)
            raise

    def claim_first(
        self,
        claimant: Claimant,
        run_ids: list[str],
        runner_id: str,
        host: str,
        environment: dict[str, Any],
        device: str,
        device_note: str | None,
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """Claim the first of ``run_ids`` still awaiting a runner, as :meth:`claim` claims one (the
        environment's ``seed`` is set to that run's); its work order (None when none could be claimed)
        and the candidates passed over (claimed or ended already, or lost to another runner just now).

        Runners that share a list of requested runs would otherwise ask for run after run that another
        runner already holds: one query tells which candidates moved past ``requested``.
        """
        wanted: dict[uuid.UUID, str] = {}
        passed: list[str] = []
        for run_id in run_ids:
            try:
                wanted.setdefault(uuid.UUID(run_id), run_id)
            except ValueError:
                passed.append(run_id)
        taken = self.ledger.newer(dict.fromkeys(wanted, REQUESTED_VERSION))
        for oid, run_id in wanted.items():
            try:
                if oid in taken:
                    raise RunAlreadyClaimed(f"run {run_id} is no longer requested")
                run: Run = self.ledger.get(oid, Run)
                self._take(run, runner_id, host, {**environment, "seed": run.seed}, device, device_note)
            except (RunAlreadyClaimed, VersionConflict, NotFound, RunNotForRunners):
                passed.append(run_id)
                continue
            try:
                return self._order_of_taken(claimant, run, runner_id), passed
            except LedgerError as exc:  # marked failed: its inputs are gone
                log.info("run %s failed at its claim: %s", run_id, exc.detail)
                passed.append(run_id)
        return None, passed

    def attach(self, claimant: Claimant, runner_id: str, backend: str) -> list[dict[str, Any]]:
        """Take over the active runs of ``backend`` whose runner went silent; return their work orders."""
        stale = heartbeats.stale(self.engine, self.heartbeat_timeout)
        orders = []
        for run_id, previous, _beat_at in stale:
            try:
                run: Run = self.ledger.get(run_id, Run)
            except NotFound:
                continue
            if not run.is_active_under(previous) or run.environment.get("backend") != backend:
                continue
            try:
                self.ledger.reattach_run(run_id, runner_id, previous, actor=claimant.actor)
            except (RunAlreadyClaimed, RunNotHeldByRunner):
                continue
            heartbeats.forget(self.engine, run_id, previous)
            heartbeats.beat(self.engine, [run_id], runner_id)
            log.info("run %s: runner %s re-attached (runner %s went silent)", run_id, runner_id, previous)
            orders.append(self.work_order(self.ledger.get(run_id, Run)))
        return orders

    # -- while a run executes -----------------------------------------------------
    def input_path(self, run: Run, digest: str) -> Path:
        """The stored file of one of the run's inputs, checked against its digest."""
        if digest not in {item["digest"] for item in self.inputs_of(run)}:
            raise NotFound(f"{digest} is not an input of this run", field="digest")
        try:
            return self.blobs.verify(digest).path
        except BlobTampered:
            raise LedgerError(f"the stored file {digest} was changed on disk; it will not be handed out") from None

    def held(self, run_id: str, runner_id: str) -> Run:
        """The run, when it is active under ``runner_id``."""
        run: Run = self.ledger.get(run_id, Run)
        if not run.is_active_under(runner_id):
            raise RunNotHeldByRunner(f"the run is {run.status} by {run.runner_id}, not active under {runner_id}")
        return run

    def held_by_principal(self, run_id: str, principal_id: str) -> Run:
        """The run, when it is active and was claimed by a runner of ``principal_id``."""
        run: Run = self.ledger.read(run_id, Run)
        if run.status not in ACTIVE_STATES or run.environment.get("runner_principal") != principal_id:
            raise RunNotYours(f"the run is {run.status} and not held by a runner of yours")
        return run

    def heartbeat(self, runner_id: str, run_ids: list[str]) -> list[str]:
        """Record a sign of life for the runs ``runner_id`` executes; return those that ended elsewhere
        (cancelled through the API, or taken over) so the runner stops them."""
        ended: list[str] = []
        alive: list[str] = []
        for run_id in run_ids:
            try:
                run: Run = self.ledger.read(run_id, Run)
            except NotFound:
                ended.append(run_id)
                continue
            (alive if run.is_active_under(runner_id) else ended).append(run_id)
        if alive:
            heartbeats.beat(self.engine, alive, runner_id)
        for run_id in ended:
            heartbeats.forget(self.engine, run_id, runner_id)
        return ended

    def log_progress(self, run: Run, points: list[dict[str, Any]], actor: str) -> Written:
        """Record metric points a run reported while executing."""
        return self.ledger.log_metrics(str(run.id), points, actor=actor)

    def sweep(self, actor: str) -> list[str]:
        """Mark runs whose runner went silent abandoned; runs on a backend that re-attaches (Ray) get a
        longer grace, so another runner can take over their still-running job first."""
        abandoned = heartbeats.sweep(self.engine, self.ledger, self.heartbeat_timeout, actor, keep=self._reattachable)
        return abandoned

    def _reattachable(self, run: Run, silent: float) -> bool:
        return run.environment.get("backend") == "ray" and silent < self.heartbeat_timeout * REATTACH_GRACE_FACTOR

    # -- the end of a run ---------------------------------------------------------
    def verify_statement(
        self, claimant: Claimant, run: Run, statement: Any, signature: str, signer_pem: str | None = None
    ) -> Attestation:
        """Check a statement's shape, that it names this run's inputs, and its signature under the
        claimant's registered key (or ``signer_pem`` for the embedded runner); return the attestation."""
        checked = check_statement(statement, str(run.id), self.statement_inputs(run))
        if claimant.principal_id is not None:
            if checked["principal_id"] != claimant.principal_id:
                raise InvalidStatementSignature(
                    "statement.principal_id names another principal; sign as yourself", field="statement.principal_id"
                )
            principal: Principal = self.ledger.read(claimant.principal_id, Principal)
            pem = principal.signing_key(str(checked["key_id"]))
        elif signer_pem is not None:
            pem = signer_pem
        else:
            raise InvalidStatementSignature("no key to check the statement against", field="signature")
        if not verify_signature(_public_key(pem), signature, statement_message(checked)):
            raise InvalidStatementSignature(
                f"the statement does not verify with signing key {checked['key_id']}", field="signature"
            )
        return Attestation(str(checked["principal_id"]), str(checked["key_id"]), checked, signature)

    def record(
        self,
        claimant: Claimant,
        run_id: str,
        statement: Any,
        signature: str,
        metrics: list[dict[str, Any]],
        node_environment: dict[str, Any] | None = None,
        signer_pem: str | None = None,
    ) -> Written:
        """Record how a run ended, as its runner's verified statement says; judge a reproduction."""
        run: Run = self.ledger.get(run_id, Run)
        attestation = self.verify_statement(claimant, run, statement, signature, signer_pem)
        checked = attestation.statement
        if not run.is_active_under(str(checked["runner_id"])):
            raise RunNotHeldByRunner(f"the run is {run.status} by {run.runner_id}, not by {checked['runner_id']}")
        if metrics_digest(metrics) != checked["metrics_digest"]:
            raise InvalidPayload("metrics do not have the statement's metrics_digest", field="metrics")
        for output in checked["outputs"]:
            if not self.blobs.exists(output["digest"]):
                raise InvalidPayload(
                    f"output {output['name']} ({output['digest']}) was not uploaded", field="statement.outputs"
                )
        if node_environment is not None:
            body = {key: value for key, value in node_environment.items() if key != "digest"}
            if environment_digest(body) != checked["environment_digest"]:
                raise InvalidPayload(
                    "node_environment does not have the statement's environment_digest", field="node_environment"
                )
            node_environment = {**body, "digest": checked["environment_digest"]}
        elif checked["environment_digest"] != run.environment_digest:
            raise InvalidPayload(
                "statement.environment_digest is not the recorded environment's; send the node_environment",
                field="statement.environment_digest",
            )
        attestation = Attestation(
            attestation.principal_id, attestation.key_id, checked, signature, node_environment=node_environment
        )
        written = self.ledger.record_attested(run, attestation, metrics, actor=claimant.actor)
        heartbeats.forget(self.engine, run_id, str(checked["runner_id"]))
        self._inputs.pop(run_id, None)
        if checked["outcome"] == "succeeded" and run.reproduces is not None:
            written = self._judge_reproduction(run_id, claimant.actor) or written
        return written

    def _judge_reproduction(self, run_id: str, actor: str) -> Written | None:
        run: Run = self.ledger.get(run_id, Run)
        assert run.reproduces is not None
        original: Run = self.ledger.get(run.reproduces, Run)
        try:
            verdict = compare_runs(self.ledger, self.blobs, original, run)
            return self.ledger.record_reproduction(
                str(original.id),
                run_id,
                verdict.matched,
                verdict.method,
                verdict.tolerance,
                verdict.details,
                actor=actor,
            )
        except LedgerError as exc:
            log.warning("could not judge reproduction %s of %s: %s", run_id, original.id, exc.detail)
            return None


__all__ = ["Claimant", "RunTokenRefused", "RunnerDesk"]
