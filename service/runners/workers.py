"""Worker processes that execute runs for a runner, one run at a time each.

A worker is forked from the runner once (the runner has imported the ML
libraries and fitted once, so the worker starts warm) and then executes runs
sent over a pipe until it is told to stop, killed, or has served
``MAX_RUNS_PER_WORKER`` runs. Forking a fresh child for every run cost about
ten times the CPU of the run itself: Python writes a reference count into
every object it touches, so a new child copies page after page of the
runner's memory before it computes anything.

A run still executes in a process of its own, apart from the runner: a crash,
a time limit or a cancellation kills that worker (its runs so far are
unaffected, its next one goes to a new worker), and nothing a run computes
passes back except its exit status; results come through files in the run's
folder. Each executor sets the seeds and global switches it depends on, so
runs do not inherit anything from an earlier run on the same worker. A worker
dies with the runner (``PR_SET_PDEATHSIG``), so a SIGKILLed runner leaves no
orphan.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import tempfile
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from service.runners import child
from service.runners.contract import ExecutionRequest

log = logging.getLogger(__name__)
MAX_RUNS_PER_WORKER = 200
"""A worker is replaced after this many runs, so whatever a library leaks over time stays bounded."""
STOP_GRACE_SECONDS = 5.0


def preload() -> Any:
    """Import the ML libraries once in the runner and run one tiny fit, so forked workers start warm;
    return the native thread pools (BLAS, OpenMP), found once here so workers need not scan.

    A process forked from a runner that never fitted anything pays for every
    lazy import and first-call set-up itself.
    """
    import importlib

    for name in (
        "sklearn.ensemble",
        "sklearn.linear_model",
        "sklearn.tree",
        "sklearn.model_selection",
        "sklearn.metrics",
        "sklearn.preprocessing",
        "sklearn.compose",
        "sklearn.impute",
        "sklearn.pipeline",
        "service.runners.sklearn_kind",
        "service.runners.torch_kind",
        "service.runners.python_kind",
    ):
        try:
            importlib.import_module(name)
        except ImportError:  # a runner without an optional library still serves the other kinds
            log.warning("could not preload %s", name)
    try:
        from threadpoolctl import ThreadpoolController

        threadpools: Any = ThreadpoolController()
    except ImportError:
        threadpools = None
    warm_up()
    return threadpools


def warm_up() -> None:
    """One tiny scikit-learn execution in this process (its files are thrown away).

    The runner warms up before forking; each worker warms up again as it starts,
    so the pages its first real run would copy are copied before a run waits.
    """
    with tempfile.TemporaryDirectory(prefix="mlledger-warm-") as folder:
        work = Path(folder)
        data = work / "warm.csv"
        rows = [f"{i % 7 / 7:.3f},{i % 5 / 5:.3f},{int(i % 7 > 3)}" for i in range(40)]
        data.write_text("a,b,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
        (work / "out").mkdir()
        request = ExecutionRequest(
            kind="sklearn",
            spec={
                "estimator": "sklearn.linear_model.LogisticRegression",
                "features": ["a", "b"],
                "target": "y",
                "task": "classification",
            },
            params={},
            seed=0,
            device="cpu",
            datasets=[data],
            code_archive=None,
            output_dir=work / "out",
        )
        try:
            child.run_request(request)
        except Exception:  # warming up is an optimisation; a runner serves without it
            log.warning("the warm-up fit failed; runs start cold", exc_info=True)


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except OSError:
        pass


def _limit_threads(threadpools: Any, threads: int) -> None:
    """Use ``threads`` native threads (``concurrency`` workers must not each start one per core)."""
    if threadpools is not None:
        threadpools.limit(limits=threads)
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _serve(connection: Connection, threads: int, threadpools: Any) -> None:
    """The worker's loop: receive a request, execute it, answer its exit status; None stops it."""
    _die_with_parent()
    _limit_threads(threadpools, threads)
    warm_up()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            status = child.run_request(request)
        except BaseException:  # run_request records ordinary failures itself; this is the last resort
            status = 1
        connection.send(status)


class Worker:
    """One worker process and the runner's end of its pipe."""

    def __init__(self, context: BaseContext, threads: int, threadpools: Any) -> None:
        ours, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(theirs, threads, threadpools), daemon=False, name="mlledger-worker"
        )
        self.process.start()
        theirs.close()
        self.connection = ours
        self.runs = 0
        self.status: int | None = None
        self.busy = False

    @property
    def waitables(self) -> list[Any]:
        """What ``multiprocessing.connection.wait`` wakes on when the run ends or the worker dies."""
        return [self.connection, self.process.sentinel]

    def submit(self, request: ExecutionRequest) -> None:
        """Start executing ``request``."""
        self.connection.send(request)
        self.runs += 1
        self.status = None
        self.busy = True

    def finished(self) -> bool:
        """Whether the current run has ended (its status is then in ``exit_status``)."""
        if not self.busy:
            return True
        try:
            if self.connection.poll():
                self.status = self.connection.recv()
                self.busy = False
                return True
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return False
        self.process.join()
        self.busy = False
        return True

    @property
    def exit_status(self) -> int | None:
        """The run's exit status: the executor's, or the worker's when it died (negative: a signal)."""
        return self.status if self.status is not None else self.process.exitcode

    @property
    def reusable(self) -> bool:
        """Whether another run may go to this worker."""
        return (
            not self.busy and self.status is not None and self.process.is_alive() and (self.runs < MAX_RUNS_PER_WORKER)
        )

    def kill(self) -> None:
        """End the worker now, whatever it is doing."""
        self.process.kill()
        self.process.join(STOP_GRACE_SECONDS)
        self.busy = False
        self.connection.close()

    def stop(self) -> None:
        """Let an idle worker exit; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)
        self.process.join(STOP_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class WorkerPool:
    """Idle workers kept for the next run; new ones are forked when none is idle.

    The pool knows every worker it started until that worker is let go.
    :meth:`close` ends them all, and runs at interpreter exit too: multiprocessing
    joins a process's non-daemonic children when it exits, and a worker waiting
    for its next run would otherwise keep its parent from ever exiting. (Workers
    are not daemonic because a daemonic process may not start processes of its
    own, which libraries such as joblib do.)
    """

    def __init__(self, context: BaseContext, threads: int, threadpools: Any) -> None:
        self.context = context
        self.threads = threads
        self.threadpools = threadpools
        self.idle: list[Worker] = []
        self.workers: set[Worker] = set()
        self.started = 0
        atexit.register(self.close)

    def _start(self) -> Worker:
        worker = Worker(self.context, self.threads, self.threadpools)
        self.workers.add(worker)
        self.started += 1
        return worker

    def execute(self, request: ExecutionRequest) -> Worker:
        """A worker executing ``request``."""
        worker = self.idle.pop() if self.idle else self._start()
        try:
            worker.submit(request)
        except (OSError, ValueError):  # the idle worker died meanwhile
            self._let_go(worker)
            worker = self._start()
            worker.submit(request)
        return worker

    def release(self, worker: Worker) -> None:
        """Take back a worker whose run ended: keep it for the next run, or let it go."""
        if worker.reusable:
            self.idle.append(worker)
        else:
            self._let_go(worker)

    def _let_go(self, worker: Worker) -> None:
        self.workers.discard(worker)
        if worker.process.is_alive():
            if worker.busy:
                worker.kill()
            else:
                worker.stop()
        else:
            worker.process.join()
            worker.connection.close()

    def fill(self, count: int) -> None:
        """Start workers until ``count`` are idle (a runner starts one per slot, so its first runs wait on none)."""
        while len(self.idle) < count:
            self.idle.append(self._start())

    def close(self) -> None:
        """End every worker: idle ones are told to stop, busy ones are killed."""
        self.idle.clear()
        for worker in list(self.workers):
            self._let_go(worker)


__all__ = ["MAX_RUNS_PER_WORKER", "Worker", "WorkerPool", "preload", "warm_up"]
