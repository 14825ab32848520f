"""The runner: claims requested runs, executes them in child processes,
heartbeats, and records what happened.

Claims are optimistic appends to the run's event stream, so of several runners
(on one machine or many, sharing one PostgreSQL) exactly one wins each run.
Runs execute in worker processes forked from the runner, which has already
imported the ML libraries, and kept for later runs (``workers.py``), so
starting a run costs a pipe message, not an interpreter start or a fork. The
runner records everything; the worker only computes and writes files.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification

from domain.code import CodeVersion
from domain.dataset import DatasetVersion
from domain.errors import LedgerError, NotFound, RunAlreadyClaimed, VersionConflict
from domain.pipeline import Pipeline
from domain.run import Run, RunStatus
from service.bootstrap import Services
from service.runners import child, environment
from service.runners.executors import ExecutionError, ExecutionRequest
from service.runners.heartbeats import beat, forget, sweep
from service.runners.reproduction import compare_runs
from service.runners.workers import Worker, WorkerPool, preload
from service.store.blobs import BlobTampered

log = logging.getLogger(__name__)
REQUESTED_TOPIC = Run.Requested.TOPIC
LOG_TAIL_BYTES = 4096


@dataclass
class Active:
    """A run executing in a child process."""

    run_id: str
    worker: Worker
    workdir: Path
    started: float
    time_limit: float | None
    progress_read: int = 0
    checked_at: float = 0.0


@dataclass
class RunnerStats:
    """What the runner did so far."""

    claimed: int = 0
    lost_claims: int = 0
    succeeded: int = 0
    failed: int = 0
    abandoned_swept: int = 0
    started_at: list[float] = field(default_factory=list)


class Runner:
    """Claims and executes runs for one device kind."""

    def __init__(
        self,
        services: Services,
        *,
        device: str = "auto",
        concurrency: int = 1,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 30.0,
        poll_interval: float = 0.25,
        work_dir: Path | None = None,
        say: Callable[[str], None] = log.info,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        self.services = services
        self.ledger = services.ledger
        self.requested_device = device
        self.device, self.device_note = environment.resolve_device(device)
        self.concurrency = max(1, concurrency)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.poll_interval = poll_interval
        self.host = socket.gethostname()
        self.runner_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.actor = f"runner:{self.runner_id}"
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="mlledger-runner-"))
        self.say = say
        self.active: dict[str, Active] = {}
        self.stats = RunnerStats()
        self._cursor = 0
        self._candidates: list[str] = []
        self._specs: dict[tuple[str, int], tuple[str, dict[str, Any], str]] = {}
        self._datasets: dict[str, tuple[str, int, str]] = {}
        self._last_sweep = 0.0
        self._lock = threading.Lock()
        self._created_work_dir = work_dir is None
        threadpools = preload()
        threads = max(1, (os.cpu_count() or 1) // self.concurrency)
        self.workers = WorkerPool(multiprocessing.get_context("fork"), threads, threadpools)

    # -- the loop -------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then stop claiming and let active runs finish."""
        beater = threading.Thread(target=self._heartbeats, args=(stop,), name="mlledger-heartbeat", daemon=True)
        beater.start()
        self.workers.fill(self.concurrency)
        note = f" ({self.device_note})" if self.device_note else ""
        self.say(f"runner {self.runner_id} on {self.device}{note}, {self.concurrency} at a time")
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("runner step failed; continuing")
                busy = False
            if not busy:
                self._idle(stop)
        while self.active:
            self._reap()
            self._idle(stop)
        self.workers.close()
        if self._created_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _idle(self, stop: threading.Event) -> None:
        """Wait a poll interval, waking at once when a child exits."""
        with self._lock:
            sentinels = [waitable for active in self.active.values() for waitable in active.worker.waitables]
        if sentinels:
            wait(sentinels, timeout=self.poll_interval)
        else:
            stop.wait(self.poll_interval)

    def step(self) -> bool:
        """One round: record finished children and progress, sweep, claim; True if anything happened."""
        busy = self._reap()
        now = time.time()
        if now - self._last_sweep >= self.heartbeat_interval:
            self._last_sweep = now
            swept = sweep(self.services.writer_engine, self.ledger, self.heartbeat_timeout, self.actor)
            self.stats.abandoned_swept += len(swept)
        while len(self.active) < self.concurrency:
            run_id = self._next_candidate()
            if run_id is None:
                break
            if self._try_start(run_id):
                busy = True
        return busy

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.is_set() or self.active:
            with self._lock:
                run_ids = list(self.active)
            if run_ids:
                try:
                    beat(self.services.writer_engine, run_ids, self.runner_id)
                except Exception:
                    log.exception("heartbeat failed")
            time.sleep(self.heartbeat_interval)

    # -- claiming -------------------------------------------------------------
    def _next_candidate(self) -> str | None:
        if not self._candidates:
            found: list[Notification] = list(
                self.ledger.recorder.select_notifications(self._cursor + 1, 500, topics=[REQUESTED_TOPIC])
            )
            if found:
                self._cursor = found[-1].id
                self._candidates = [str(n.originator_id) for n in found]
                # Runners that see the same requests try them in different orders, so they
                # rarely race for one run and lose the claim (three wasted round trips each).
                random.shuffle(self._candidates)
        return self._candidates.pop(0) if self._candidates else None

    def _wants(self, run: Run) -> bool:
        if not run.awaits_runner:
            return False
        return not (run.device == "cuda" and self.device != "cuda")

    def _try_start(self, run_id: str) -> bool:
        try:
            run: Run = self.ledger.get(run_id, Run)
        except NotFound:
            return False
        if not self._wants(run):
            return False
        device = self.device if run.device in ("auto", self.device) else run.device
        env = environment.capture_environment(device, run.seed, {})
        beat(self.services.writer_engine, [run_id], self.runner_id)  # first, so a claim never goes unwatched
        try:
            self.ledger.claim_and_capture(
                run_id, self.runner_id, self.host, env, env["digest"], device, self.device_note, run=run
            )
        except (RunAlreadyClaimed, VersionConflict):
            self.stats.lost_claims += 1
            forget(self.services.writer_engine, run_id, self.runner_id)
            return False
        self.stats.claimed += 1
        try:
            self._start(run, device)
        except (ExecutionError, LedgerError) as exc:
            self._fail(run_id, str(exc.detail if isinstance(exc, LedgerError) else exc))
        return True

    def _start(self, run: Run, device: str) -> None:
        run_id = str(run.id)
        request = self._request(run, device)
        workdir = request.output_dir
        worker = self.workers.execute(request)
        limit = request.spec.get("time_limit_seconds") if request.kind == "python" else None
        with self._lock:
            self.active[run_id] = Active(run_id, worker, workdir, time.time(), float(limit) + 5 if limit else None)
        self.stats.started_at.append(time.time())

    def _spec(self, pipeline_id: str, number: int) -> tuple[str, dict[str, Any], str]:
        """(kind, spec, digest) of a pipeline spec version: immutable once recorded, so read once."""
        key = (pipeline_id, number)
        found = self._specs.get(key)
        if found is None:
            pipeline: Pipeline = self.ledger.get(pipeline_id, Pipeline)
            found = self._specs[key] = (pipeline.kind, pipeline.spec(number), pipeline.digests[number - 1])
        return found

    def _dataset(self, dataset_id: str) -> tuple[str, int, str]:
        """(name, number, digest) of a dataset version: immutable, so read once (its file is checked every run)."""
        found = self._datasets.get(dataset_id)
        if found is None:
            dataset: DatasetVersion = self.ledger.get(dataset_id, DatasetVersion)
            found = self._datasets[dataset_id] = (dataset.name, dataset.number, dataset.digest)
        return found

    def _request(self, run: Run, device: str) -> ExecutionRequest:
        assert run.pipeline_id is not None and run.pipeline_version is not None
        kind, spec, digest = self._spec(run.pipeline_id, run.pipeline_version)
        if digest != run.spec_digest:
            raise ExecutionError("the pipeline spec does not have the digest the run recorded")
        datasets = []
        for dataset_id in run.dataset_version_ids:
            name, number, dataset_digest = self._dataset(dataset_id)
            try:
                datasets.append(self.services.blobs.verify(dataset_digest).path)
            except BlobTampered:
                raise ExecutionError(
                    f"dataset {name} v{number}: the stored file no longer has digest "
                    f"{dataset_digest}; refusing to train on it"
                ) from None
            except NotFound:
                raise ExecutionError(f"dataset {name} v{number}: its file is not in this store") from None
        archive = None
        if run.code_version_id is not None:
            code: CodeVersion = self.ledger.get(run.code_version_id, CodeVersion)
            if code.archive_digest is not None:
                try:
                    archive = self.services.blobs.verify(code.archive_digest).path
                except (BlobTampered, NotFound):
                    raise ExecutionError(f"code archive {code.archive_digest} is missing or changed") from None
        workdir = self.work_dir / str(run.id)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        return ExecutionRequest(
            kind=kind,
            spec=spec,
            params=dict(run.params),
            seed=run.seed,
            device=device,
            datasets=datasets,
            code_archive=archive,
            output_dir=workdir,
        )

    # -- recording --------------------------------------------------------------
    def _reap(self) -> bool:
        busy = False
        for run_id, active in list(self.active.items()):
            if not active.worker.finished():
                self._record_progress(active)
                if active.time_limit and time.time() - active.started > active.time_limit:
                    active.worker.kill()
                if time.time() - active.checked_at >= self.heartbeat_interval and self._cancelled(active):
                    active.worker.kill()
                    self._forget(run_id)
                    busy = True
                continue
            self._record_result(active)
            self._forget(run_id)
            busy = True
        return busy

    def _cancelled(self, active: Active) -> bool:
        """Whether the run ended elsewhere (cancelled through the API); checked once per heartbeat."""
        active.checked_at = time.time()
        try:
            run: Run = self.ledger.get(active.run_id, Run)
        except NotFound:
            return True
        return run.finished

    def _unread_points(self, active: Active) -> list[dict[str, Any]]:
        """Metric points the child wrote to progress.jsonl since the last read."""
        batches, active.progress_read = child.unread_progress(active.workdir, active.progress_read)
        return [point for batch in batches for point in batch]

    def _record_progress(self, active: Active) -> None:
        points = self._unread_points(active)
        if points:
            self.ledger.log_metrics(active.run_id, points, actor=self.actor)

    def _record_result(self, active: Active) -> None:
        """Record how the child ended; its last metric points go in the same append as a success."""
        points = self._unread_points(active)
        result_path = active.workdir / "result.json"
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        if result is None or not result.get("ok"):
            if points:
                self.ledger.log_metrics(active.run_id, points, actor=self.actor)
            if result is None:
                code = active.worker.exit_status
                reason = "time limit exceeded" if code is not None and code < 0 else f"child exited with code {code}"
                self._fail(active.run_id, f"the run produced no result: {reason}")
            else:
                self._fail(active.run_id, str(result.get("error", "failed"))[-LOG_TAIL_BYTES:])
            return
        try:
            final = [m for m in result.get("final_metrics", result.get("metrics", [])) if m.get("final", True)]
            if (active.workdir / "progress.jsonl").exists():
                final = points  # every point came through progress.jsonl; the rest not yet recorded
            artifacts = [
                self._store_artifact(active.workdir / name)
                for name in (result.get("model_file"), result.get("predictions_file"))
                if name
            ]
            details = self.services.blobs.put_bytes(json.dumps(result.get("details", {}), sort_keys=True).encode())
            artifacts.append(("execution.json", details.digest, details.size, "application/json"))
            self.ledger.record_execution(active.run_id, self.runner_id, final, artifacts)
            self.stats.succeeded += 1
        except LedgerError as exc:
            log.warning("could not record the result of %s: %s", active.run_id, exc.detail)
            return
        self._check_reproduction(active.run_id)

    def _store_artifact(self, path: Path) -> tuple[str, str, int, str]:
        """Put an output file in the blob store; return (name, digest, size, media type)."""
        with path.open("rb") as handle:
            blob = self.services.blobs.put_chunks(iter(lambda: handle.read(1024 * 1024), b""), max_bytes=2**40)
        media = "application/json" if path.suffix == ".json" else "application/octet-stream"
        return path.name, blob.digest, blob.size, media

    def _check_reproduction(self, run_id: str) -> None:
        run: Run = self.ledger.get(run_id, Run)
        if run.reproduces is None:
            return
        original: Run = self.ledger.get(run.reproduces, Run)
        verdict = compare_runs(self.ledger, self.services.blobs, original, run)
        self.ledger.record_reproduction(
            str(original.id),
            run_id,
            verdict.matched,
            verdict.method,
            verdict.tolerance,
            verdict.details,
            actor=self.actor,
        )

    def _fail(self, run_id: str, error: str) -> None:
        self.stats.failed += 1
        try:
            self.ledger.finish_run(run_id, RunStatus.FAILED, error[-LOG_TAIL_BYTES:], actor=self.actor)
        except LedgerError as exc:
            log.warning("could not record the failure of %s: %s", run_id, exc.detail)
        self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            active = self.active.pop(run_id, None)
        forget(self.services.writer_engine, run_id, self.runner_id)
        if active is not None:
            self.workers.release(active.worker)
            shutil.rmtree(active.workdir, ignore_errors=True)


def default_say(message: str) -> None:
    """Print runner progress (used by the CLI)."""
    print(message, flush=True)


__all__ = ["Runner", "RunnerStats", "default_say"]
