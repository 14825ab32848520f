"""The runner: claims requested runs through the ledger, executes them on a backend,
heartbeats, and hands in a signed execution statement for each.

The runner holds no ledger key and records nothing itself: it talks to the
ledger service through a gateway (``gateway.py``: HTTP as a principal with the
``runner`` role, or in-process for the runner embedded in ``mlledger serve``).
Claims are optimistic appends the service makes on the run's stream, so of
several runners exactly one wins each run. Runs execute on a backend:
``local`` (worker processes forked from the runner, which has already imported
the ML libraries, so starting a run costs a pipe message) or ``ray`` (a Ray job
per run). When a run ends, the runner signs an execution statement (run, input
digests, environment digest, output digests, final metrics digest, resources)
with its own key; the service checks it before recording anything.
"""

from __future__ import annotations

import itertools
import logging
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

from domain.errors import LedgerError
from domain.execution import ERROR_MAX, execution_statement, statement_message
from service.bootstrap import Services
from service.runners import environment
from service.runners.contract import ExecutionError
from service.runners.gateway import Gateway, InProcessGateway, LedgerUnavailable
from service.runners.local_backend import LocalBackend
from service.runners.work import Backend, Execution, Outcome, WorkOrder

log = logging.getLogger(__name__)
ATTACH_EVERY_BEATS = 2
MAX_BACKOFF_SECONDS = 30.0
CLAIM_CANDIDATES = 16
"""How many requested runs one claim names (the ledger claims the first still requested)."""


@dataclass
class Active:
    """A run executing on the backend."""

    order: WorkOrder
    execution: Execution
    environment_digest: str | None
    started: float = field(default_factory=time.time)


@dataclass
class RunnerStats:
    """What the runner did so far."""

    claimed: int = 0
    lost_claims: int = 0
    succeeded: int = 0
    failed: int = 0
    reattached: int = 0
    abandoned_swept: int = 0
    started_at: list[float] = field(default_factory=list)


class Runner:
    """Claims and executes runs for one device kind."""

    def __init__(
        self,
        source: Services | Gateway,
        *,
        device: str = "auto",
        concurrency: int = 1,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 30.0,
        poll_interval: float = 0.25,
        work_dir: Path | None = None,
        backend: Callable[[Gateway, Path, int], Backend] | None = None,
        say: Callable[[str], None] = log.info,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        self.host = socket.gethostname()
        self.runner_id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.actor = f"runner:{self.runner_id}"
        self.gateway: Gateway = InProcessGateway(source, self.actor) if isinstance(source, Services) else source
        self.requested_device = device
        self.concurrency = max(1, concurrency)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.poll_interval = poll_interval
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="mlledger-runner-"))
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._created_work_dir = work_dir is None
        self.say = say
        self.active: dict[str, Active] = {}
        self.stats = RunnerStats()
        self._candidates: dict[str, dict[str, Any]] = {}  # run id -> requested run, in this runner's order
        self._environments: dict[str, dict[str, Any]] = {}  # device -> this process's environment (no seed)
        self._ended: set[str] = set()
        self._last_sweep = 0.0
        self._beats = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self.backend: Backend = (backend or LocalBackend)(self.gateway, self.work_dir, self.concurrency)
        if self.backend.devices_here:
            try:
                self.device, self.device_note = environment.resolve_device(device)
            except ExecutionError:
                self.backend.close()
                raise
        else:  # the cluster's nodes have the devices, not this machine
            self.device = "cuda" if device == "cuda" else "cpu"
            self.device_note = (
                None if device != "auto" else "auto on a cluster runs on cpu; pass --device cuda for GPUs"
            )

    # -- the loop -------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then stop claiming and let active runs finish."""
        beater = threading.Thread(target=self._heartbeats, args=(stop,), name="mlledger-heartbeat", daemon=True)
        beater.start()
        note = f" ({self.device_note})" if self.device_note else ""
        self.say(
            f"runner {self.runner_id} on {self.device}{note}, {self.concurrency} at a time, {self.backend.name} backend"
        )
        while not stop.is_set():
            try:
                busy = self.step()
                self._backoff = 0.0
            except LedgerUnavailable as exc:
                self._wait_out(exc.detail)
                busy = False
            except Exception:
                log.exception("runner step failed; continuing")
                busy = False
            if not busy:
                self._idle(stop)
        while self.active:
            try:
                self._reap()
            except LedgerUnavailable as exc:
                self._wait_out(exc.detail)
            self._idle(stop)
        self.backend.close()
        self.gateway.close()
        if self._created_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _wait_out(self, reason: str) -> None:
        """Back off (doubling, up to 30 s) after the ledger or the cluster could not be reached."""
        self._backoff = min(MAX_BACKOFF_SECONDS, max(self.poll_interval, self._backoff * 2 or 1.0))
        self._retry_at = time.monotonic() + self._backoff
        self.say(f"runner {self.runner_id}: {reason}; retrying in {self._backoff:.0f} s")

    def _idle(self, stop: threading.Event) -> None:
        """Wait a poll interval, waking at once when a local run ends."""
        pause = max(self.poll_interval, self._retry_at - time.monotonic())
        with self._lock:
            sentinels = [w for a in self.active.values() for w in getattr(a.execution, "waitables", [])]
        if sentinels:
            wait(sentinels, timeout=pause)
        else:
            stop.wait(pause)

    def step(self) -> bool:
        """One round: record finished runs and progress, sweep, re-attach, claim; True if anything happened."""
        busy = self._reap()
        now = time.time()
        if now - self._last_sweep >= self.heartbeat_interval:
            self._last_sweep = now
            self.stats.abandoned_swept += len(self.gateway.sweep())
            self._beats += 1
            if self.backend.name != "local" and self._beats % ATTACH_EVERY_BEATS == 0:
                busy = self._reattach() or busy
        if len(self.active) < self.concurrency and not self.backend.ready():
            raise LedgerUnavailable(f"the {self.backend.name} backend cannot be reached; leaving runs requested")
        while len(self.active) < self.concurrency:
            candidates = self._next_candidates()
            if not candidates:
                break
            if self._claim_first(candidates):
                busy = True
        return busy

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.is_set() or self.active:
            with self._lock:
                run_ids = list(self.active)
            if run_ids:
                try:
                    ended = self.gateway.heartbeat(self.runner_id, run_ids)
                    with self._lock:
                        self._ended.update(ended)
                except Exception as exc:
                    log.warning("heartbeat failed: %s", getattr(exc, "detail", exc))
            time.sleep(self.heartbeat_interval)

    # -- claiming -------------------------------------------------------------
    def _next_candidates(self) -> list[dict[str, Any]]:
        """The next requested runs to try, all for one device, in this runner's order (empty: none left)."""
        if not self._candidates:
            found = [candidate for candidate in self.gateway.requested() if self._wants(candidate)]
            # Runners that see the same requests try them in different orders, so they
            # rarely race for one run and lose the claim.
            random.shuffle(found)
            self._candidates = {str(candidate["run_id"]): candidate for candidate in found}
        if not self._candidates:
            return []
        device = self._device_of(next(iter(self._candidates.values())))
        same_device = (c for c in self._candidates.values() if self._device_of(c) == device)
        return list(itertools.islice(same_device, CLAIM_CANDIDATES))

    def _wants(self, candidate: dict[str, Any]) -> bool:
        return not (candidate.get("device") == "cuda" and self.device != "cuda")

    def _device_for(self, requested: str) -> str:
        return self.device if requested in ("auto", self.device) else requested

    def _device_of(self, candidate: dict[str, Any]) -> str:
        return self._device_for(str(candidate.get("device", "auto")))

    def _claim_first(self, candidates: list[dict[str, Any]]) -> bool:
        """Claim the first of ``candidates`` still requested and start it; False when none could be claimed.

        The ledger passes over candidates another runner took already, in one request, and names them:
        they leave this runner's list, so it never asks for them again.
        """
        device = self._device_of(candidates[0])
        claim = {
            "runner_id": self.runner_id,
            "host": self.host,
            "device": device,
            "device_note": self.device_note,
            "backend": self.backend.name,
            "environment": {**self._environment(device), "seed": int(candidates[0].get("seed", 0))},
        }
        tried = [str(candidate["run_id"]) for candidate in candidates]
        try:
            order, passed = self.gateway.claim_first(tried, claim)
        except LedgerUnavailable:
            raise
        except LedgerError as exc:
            log.info("could not claim any of %d runs: %s", len(tried), exc.detail)
            passed, order = tried, None
        for run_id in tried if order is None else [*passed, order.run_id]:
            self._candidates.pop(run_id, None)
        self.stats.lost_claims += len(passed)
        if order is None:
            return False
        self.stats.claimed += 1
        self._start(order, device)
        return True

    def _environment(self, device: str) -> dict[str, Any]:
        """What this runner executes on for ``device``, less the seed (each claim adds its run's).

        Captured once per device: nothing it describes changes while the runner serves (the
        packages, the machine, the runner's own torch switches; runs execute in worker processes).
        """
        found = self._environments.get(device)
        if found is None:
            captured = environment.capture_environment(device, 0, {})
            found = self._environments[device] = {k: v for k, v in captured.items() if k not in ("digest", "seed")}
        return found

    def _start(self, order: WorkOrder, device: str) -> None:
        """Start a claimed run on the backend (a run that cannot start is recorded as failed)."""
        env_digest = order.environment_digest
        try:
            execution = self.backend.start(order, device)
        except (ExecutionError, LedgerError) as exc:
            if isinstance(exc, LedgerUnavailable) and self.backend.jobs_outlive_runner:
                self.say(f"run {order.run_id}: {exc.detail}; another runner will re-attach or it will be abandoned")
                return
            self._finish(order, Outcome(ok=False, error=str(exc.detail)), env_digest)
            return
        with self._lock:
            self.active[order.run_id] = Active(order, execution, env_digest)
        self.stats.started_at.append(time.time())

    def _reattach(self) -> bool:
        """Take over runs whose runner died while their job went on (backends that keep jobs running)."""
        orders = self.gateway.attach(self.runner_id, self.backend.name)
        for order in orders:
            device = self._device_for(order.device)
            try:
                execution = self.backend.reattach(order, device) or self.backend.start(order, device)
            except LedgerUnavailable as exc:  # the run stays ours but unwatched: the next round takes it over
                self.say(f"run {order.run_id}: {exc.detail}; re-attaching later")
                continue
            except (ExecutionError, LedgerError) as exc:
                self._finish(order, Outcome(ok=False, error=str(exc.detail)), order.environment_digest)
                continue
            self.stats.reattached += 1
            self.say(f"runner {self.runner_id}: re-attached to run {order.run_id}")
            with self._lock:
                self.active[order.run_id] = Active(order, execution, order.environment_digest)
        return bool(orders)

    # -- recording --------------------------------------------------------------
    def _reap(self) -> bool:
        busy = False
        for run_id, active in list(self.active.items()):
            execution = active.execution
            with self._lock:
                ended = run_id in self._ended
                self._ended.discard(run_id)
            if ended:  # cancelled through the API, or taken over
                self.say(f"run {run_id} ended elsewhere (cancelled, or taken over): stopping it here")
                execution.cancel()
                self._release(run_id)
                busy = True
                continue
            if not execution.finished():
                points = execution.progress()
                if points:
                    self.gateway.progress(active.order, points)
                continue
            try:
                outcome = execution.outcome()
            except (ExecutionError, LedgerError) as exc:
                if isinstance(exc, LedgerUnavailable):
                    raise
                outcome = Outcome(ok=False, error=str(exc.detail))
            self._finish(active.order, outcome, active.environment_digest)
            self._release(run_id)
            busy = True
        return busy

    def _finish(self, order: WorkOrder, outcome: Outcome, environment_digest: str | None) -> None:
        """Sign the execution statement and hand it in; the service records it (or refuses it)."""
        node_environment = outcome.environment
        if node_environment is not None:
            environment_digest = environment.environment_digest(node_environment)
        error = None if outcome.ok else (outcome.error or "failed")[-ERROR_MAX:]
        statement = execution_statement(
            run_id=order.run_id,
            runner_id=self.runner_id,
            principal_id=self.gateway.principal_id,
            key_id=self.gateway.signer.key_id,
            outcome="succeeded" if outcome.ok else "failed",
            error=error,
            inputs=[order.spec_digest, *(item.digest for item in order.inputs)],
            environment_digest=environment_digest,
            outputs=[item.to_json() for item in outcome.outputs],
            metrics=outcome.metrics,
            resources=outcome.resources,
        )
        signature = self.gateway.signer.sign(statement_message(statement))
        try:
            self.gateway.record(order, statement, signature, outcome.metrics, node_environment)
        except LedgerUnavailable:
            raise
        except LedgerError as exc:
            log.warning("could not record the end of %s: %s", order.run_id, exc.detail)
            return
        if outcome.ok:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1

    def _release(self, run_id: str) -> None:
        with self._lock:
            active = self.active.pop(run_id, None)
        release = getattr(active.execution, "release", None) if active is not None else None
        if release is not None:
            release()


def default_say(message: str) -> None:
    """Print runner progress (used by the CLI)."""
    print(message, flush=True)


__all__ = ["Runner", "RunnerStats", "default_say"]
