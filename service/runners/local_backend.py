"""The local backend: runs execute in the runner's pre-forked worker processes (``workers.py``).

Inputs come through the gateway by digest (on the service's machine, the stored
file itself; elsewhere, a download kept in the runner's cache by digest), each
run gets a private folder, and when the worker is done its output files are
uploaded through the gateway (in one request) before the outcome is reported.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from domain.errors import LedgerError
from service.runners import child
from service.runners.contract import ExecutionError, ExecutionRequest
from service.runners.gateway import Gateway
from service.runners.work import Outcome, WorkOrder
from service.runners.workers import Worker, WorkerPool, preload

LOG_TAIL_BYTES = 4096
TIME_LIMIT_GRACE_SECONDS = 5.0


class LocalExecution:
    """One run in a worker process: progress and result come through files in its folder."""

    def __init__(
        self,
        backend: LocalBackend,
        order: WorkOrder,
        worker: Worker,
        workdir: Path,
        request: ExecutionRequest,
    ) -> None:
        self.backend = backend
        self.order = order
        self.worker = worker
        self.workdir = workdir
        self.request = request
        self.started = time.monotonic()
        limit = order.time_limit if order.kind == "python" else None
        self.deadline = None if limit is None else self.started + limit + TIME_LIMIT_GRACE_SECONDS
        self.progress_read = 0
        self.timed_out = False
        self.cancelled = False

    @property
    def waitables(self) -> list[Any]:
        """What wakes the runner when this run ends."""
        return self.worker.waitables

    def finished(self) -> bool:
        """Whether the worker is done with this run (a run past its time limit is killed here)."""
        if self.worker.finished():
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            self.worker.kill()
            return True
        return False

    def progress(self) -> list[dict[str, Any]]:
        """Metric points the worker wrote since the last call."""
        batches, self.progress_read = child.unread_progress(self.workdir, self.progress_read)
        return [point for batch in batches for point in batch]

    def outcome(self) -> Outcome:
        """How the run ended; a success's output files are uploaded first."""
        points = self.progress()
        result_path = self.workdir / "result.json"
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        resources = {
            "wall_seconds": round(time.monotonic() - self.started, 3),
            **((result or {}).get("resources") or {}),
            "host": self.backend.host,
            "backend": "local",
        }
        if result is None or not result.get("ok"):
            if result is not None:
                error = str(result.get("error", "failed"))
            elif self.cancelled:
                error = "cancelled"
            elif self.timed_out:
                error = "the run produced no result: time limit exceeded"
            else:
                code = self.worker.exit_status
                reason = "time limit exceeded" if code is not None and code < 0 else f"child exited with code {code}"
                error = f"the run produced no result: {reason}"
            return Outcome(ok=False, metrics=points, error=error[-LOG_TAIL_BYTES:], resources=resources)
        if not (self.workdir / "progress.jsonl").exists():
            points = [m for m in result.get("final_metrics", result.get("metrics", [])) if m.get("final", True)]
        files = [self.workdir / name for name in (result.get("model_file"), result.get("predictions_file")) if name]
        details = self.workdir / "execution.json"
        details.write_text(json.dumps(result.get("details", {}), sort_keys=True), encoding="utf-8")
        files.append(details)
        outputs = self.backend.gateway.upload_all(self.order, files)
        return Outcome(ok=True, metrics=points, outputs=outputs, resources=resources)

    def cancel(self) -> None:
        """Kill the worker executing the run."""
        self.cancelled = True
        self.worker.kill()

    def release(self) -> None:
        """Give the worker back and remove the run's folder."""
        self.backend.workers.release(self.worker)
        shutil.rmtree(self.workdir, ignore_errors=True)


class LocalBackend:
    """Runs in pre-forked worker processes of this runner."""

    name = "local"
    devices_here = True
    jobs_outlive_runner = False

    def __init__(self, gateway: Gateway, work_dir: Path, concurrency: int) -> None:
        self.gateway = gateway
        self.work_dir = work_dir
        self.cache = work_dir / "inputs"
        self.host = socket.gethostname()
        threadpools = preload()
        threads = max(1, (os.cpu_count() or 1) // max(1, concurrency))
        self.workers = WorkerPool(multiprocessing.get_context("fork"), threads, threadpools)
        self.workers.fill(concurrency)

    def ready(self) -> bool:
        """The local backend is always there."""
        return True

    def request(self, order: WorkOrder, device: str) -> ExecutionRequest:
        """The execution request of a work order: inputs fetched and checked, a fresh private folder."""
        try:
            datasets = [self.gateway.fetch(order, item, self.cache) for item in order.datasets]
            code = order.code
            archive = None if code is None else self.gateway.fetch(order, code, self.cache)
        except LedgerError as exc:
            raise ExecutionError(exc.detail) from None
        workdir = self.work_dir / order.run_id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        return ExecutionRequest(
            kind=order.kind,
            spec=order.spec,
            params=dict(order.params),
            seed=order.seed,
            device=device,
            datasets=datasets,
            code_archive=archive,
            output_dir=workdir,
        )

    def start(self, order: WorkOrder, device: str) -> LocalExecution:
        """Start the run in an idle (or new) worker."""
        request = self.request(order, device)
        worker = self.workers.execute(request)
        return LocalExecution(self, order, worker, request.output_dir, request)

    def reattach(self, order: WorkOrder, device: str) -> LocalExecution | None:
        """A local run dies with its runner; there is nothing to resume."""
        return None

    def close(self) -> None:
        """End every worker."""
        self.workers.close()


__all__ = ["LocalBackend", "LocalExecution"]
