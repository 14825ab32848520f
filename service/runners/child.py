"""Run one execution in a child process that a runner can poll, heartbeat around and kill.

``python -m service.runners.child REQUEST_JSON`` reads an
:class:`ExecutionRequest` (as written by ``ExecutionRequest.to_json``), appends
each progress batch as a JSON line to ``output_dir/progress.jsonl`` and writes
``output_dir/result.json``: ``{"ok": true, "metrics", "model_file",
"predictions_file", "details", "resources"}`` or ``{"ok": false, "error",
"resources"}`` (``resources``: what the execution used, measured by
:mod:`service.runners.usage`). It exits 0,
also for an :class:`ExecutionError`, and 1 when it crashed (the traceback's last
line is the error). :func:`run_request` does the same in the calling process
(a ``multiprocessing`` target); :func:`run_in_child` starts the module in its
own process group and returns a :class:`ChildExecution` handle. An entrypoint
subprocess of the python kind dies with its parent, however the parent ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult
from service.runners.usage import measured

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TERMINATE_GRACE_SECONDS = 5.0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _write_result(output_dir: Path, payload: dict[str, Any]) -> None:
    """Write result.json atomically, so a poller never reads half of it."""
    temporary = output_dir / "result.json.tmp"
    temporary.write_text(json.dumps(payload, default=_jsonable, allow_nan=False), encoding="utf-8")
    os.replace(temporary, output_dir / "result.json")


def _relative(path: Path, output_dir: Path) -> str:
    """A file's name relative to the output folder (absolute when it lies elsewhere)."""
    try:
        return str(path.resolve().relative_to(output_dir.resolve()))
    except ValueError:
        return str(path)


def run_request(request: ExecutionRequest, backend: str = "local") -> int:
    """Execute ``request`` here, writing progress.jsonl and result.json; return the exit status.

    Usable as a ``multiprocessing.Process`` target. Every metric point appears
    exactly once in progress.jsonl: live batches as they happen, then the
    remaining (final) points as the last batch, written before result.json, so a
    runner that records progress.jsonl records everything. result.json also
    carries the ``resources`` the execution used on ``backend``, succeeded or not.
    """
    with measured(request.device, backend) as usage:
        status, payload = _execute(request)
    _write_result(request.output_dir, payload | {"resources": usage.resources})
    return status


def _execute(request: ExecutionRequest) -> tuple[int, dict[str, Any]]:
    """Execute ``request``, writing progress.jsonl; the exit status and result.json's payload."""
    from service.runners.executors import execute

    progress_path = request.output_dir / "progress.jsonl"

    def report(points: list[dict[str, Any]]) -> None:
        with progress_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(points, default=_jsonable) + "\n")
            handle.flush()

    try:
        result = execute(request, report)
    except ExecutionError as exc:
        return 0, {"ok": False, "error": exc.detail}
    except Exception:
        traceback.print_exc()
        last = traceback.format_exc().strip().splitlines()[-1]
        return 1, {"ok": False, "error": last}
    remaining = result.metrics[int(result.details.get("metrics_reported_live", 0)) :]
    if remaining:
        report(remaining)
    payload = result.to_json() | {
        "ok": True,
        "model_file": _relative(result.model_file, request.output_dir),
        "predictions_file": _relative(result.predictions_file, request.output_dir),
    }
    return 0, payload


WARM = "--warm"
"""``python -m service.runners.child --warm REQUEST_JSON [BACKEND]``: read the run's kind and spec as a JSON
line from stdin and import what that kind needs, then write when that was done (Unix time) to ``READY_FILE``
beside the request file; then, once a second line says ``go`` (the request file is written), execute the
request; stdin closed instead: exit 0 (the caller gave up)."""
READY_FILE = "child-ready"
READY_MAX_BYTES = 32


def main(argv: list[str] | None = None) -> int:
    """``python -m service.runners.child REQUEST_JSON [BACKEND]``: execute the request in that file
    (its resources are reported as used on ``BACKEND``, default ``local``); with ``--warm`` in place of
    the file, see :data:`WARM`."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [WARM]:
        from service.runners.executors import preload

        args = args[1:]
        with contextlib.suppress(ValueError, TypeError, KeyError):
            described = json.loads(sys.stdin.readline())
            preload(str(described["kind"]), dict(described["spec"]))
        if args:
            with contextlib.suppress(OSError):
                Path(args[0]).with_name(READY_FILE).write_text(f"{time.time():.3f}", encoding="ascii")
        if sys.stdin.readline().strip() != "go":
            return 0  # the caller gave up before the request was ready (its inputs did not arrive)
    if len(args) not in (1, 2):
        print("usage: python -m service.runners.child REQUEST_JSON [BACKEND]", file=sys.stderr)
        return 2
    request = ExecutionRequest.from_json(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    return run_request(request, *args[1:])


def unread_progress(output_dir: Path, offset: int) -> tuple[list[list[dict[str, Any]]], int]:
    """Progress batches a child appended to ``progress.jsonl`` after byte ``offset``
    (complete lines only), and the offset to read from next time."""
    path = output_dir / "progress.jsonl"
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()], offset + len(complete)


class ChildExecution:
    """A child process executing one request: poll it, read its progress, kill it, read its result."""

    def __init__(self, process: subprocess.Popen[bytes], output_dir: Path, timeout: float | None) -> None:
        self.process = process
        self.output_dir = output_dir
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timed_out = False
        self._progress_offset = 0

    @property
    def log_file(self) -> Path:
        """Where the child's stdout and stderr go."""
        return self.output_dir / "child.log"

    def poll(self) -> int | None:
        """The exit status, or None while running; kills the child once its time is up."""
        returncode = self.process.poll()
        if returncode is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            self.kill()
            returncode = self.process.returncode
        return returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end (within its own time limit); return its exit status."""
        if self.deadline is not None:
            remaining = max(0.0, self.deadline - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.timed_out = True
                self.kill()
                return self.process.wait()
            raise

    def read_progress(self) -> list[list[dict[str, Any]]]:
        """Progress batches written since the last call (complete lines only)."""
        batches, self._progress_offset = unread_progress(self.output_dir, self._progress_offset)
        return batches

    def kill(self, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """Ask the child to stop (SIGTERM), then kill its whole process group after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def result(self) -> ExecutionResult:
        """The result of a finished child; raise :class:`ExecutionError` when it failed or ran out of time."""
        returncode = self.wait()
        if self.timed_out:
            raise ExecutionError(f"time limit of {self.timeout:g} s exceeded")
        path = self.output_dir / "result.json"
        if not path.exists():
            # imported here: python_kind loads NumPy, which a Ray job that only starts the child never needs
            from service.runners.python_kind import output_tail

            tail = output_tail(self.log_file).strip().splitlines()
            raise ExecutionError(
                f"the execution process exited with status {returncode} without a result"
                + (f": {tail[-1]}" if tail else "")
            )
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not payload.get("ok"):
            raise ExecutionError(str(payload.get("error") or "the execution failed"))
        result = ExecutionResult.from_json(payload)
        return ExecutionResult(
            result.metrics,
            self.output_dir / result.model_file,
            self.output_dir / result.predictions_file,
            result.details,
        )


class WarmChild:
    """An execution child started before its request is ready (``--warm``): it imports what the run's kind
    needs while the caller downloads the inputs, then executes the request it is sent."""

    def __init__(self, process: subprocess.Popen[bytes], output_dir: Path) -> None:
        self.process = process
        self.output_dir = output_dir

    @classmethod
    def start(cls, kind: str, spec: dict[str, Any], output_dir: Path, backend: str, **popen: Any) -> WarmChild:
        """Start ``python -m service.runners.child --warm`` (``output_dir/request.json`` to come) in its own
        process group, its output to ``output_dir/child.log``; ``popen``: further ``Popen`` arguments."""
        with (output_dir / "child.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.runners.child", WARM, str(output_dir / "request.json"), backend],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        child = cls(process, output_dir)
        child._send(json.dumps({"kind": kind, "spec": spec}) + "\n")
        return child

    def _send(self, line: str, *, last: bool = False) -> None:
        if self.process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):  # it died starting: its result says so
            self.process.stdin.write(line.encode("utf-8"))
            self.process.stdin.flush()
            if last:
                self.process.stdin.close()

    def ready_at(self) -> float | None:
        """When the child had imported what its run's kind needs (Unix time); None before, or if unknown.

        The run's own code can write in the output folder, so the file is a hint for timing only: it is
        read without following a link, without waiting on a pipe, at most a few bytes, and only a finite
        number is taken.
        """
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            descriptor = os.open(self.output_dir / READY_FILE, flags)
        except OSError:
            return None
        with os.fdopen(descriptor, "rb") as handle:
            try:
                text = handle.read(READY_MAX_BYTES) if stat.S_ISREG(os.fstat(descriptor).st_mode) else b""
                value = float(text)
            except (OSError, ValueError):
                return None
        return value if math.isfinite(value) else None

    def execute(self, request: ExecutionRequest, timeout: float | None) -> ChildExecution:
        """Write ``request`` to the ``request.json`` the child was told of and let it execute the request; the
        execution, its time limit counted from now."""
        (self.output_dir / "request.json").write_text(json.dumps(request.to_json()), encoding="utf-8")
        self._send("go\n", last=True)
        return ChildExecution(self.process, request.output_dir, timeout)

    def kill(self, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """Stop it (and whatever it started), executing or not."""
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.process.stdin.close()
        ChildExecution(self.process, self.output_dir, None).kill(grace)


def run_in_child(request: ExecutionRequest, timeout: float | None = None) -> ChildExecution:
    """Start ``python -m service.runners.child`` for ``request`` in its own process group."""
    request.output_dir.mkdir(parents=True, exist_ok=True)
    request_file = request.output_dir / "request.json"
    request_file.write_text(json.dumps(request.to_json()), encoding="utf-8")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
    with (request.output_dir / "child.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.runners.child", str(request_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    return ChildExecution(process, request.output_dir, timeout)


if __name__ == "__main__":
    sys.exit(main())
