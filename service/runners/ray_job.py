"""The job side of the Ray backend: ``python -m service.runners.ray_job``, run by Ray on some node.

It is given, in its environment (see ``ray_backend.py``), the work order, the
ledger's URL, the run's token and the device, and it:

1. takes the run token and the work order out of the environment, and every
   ``RAY_*`` variable (the cluster's own token among them), so the execution
   and any code it runs never see them;
2. downloads each input by digest through the run-scoped endpoint with the run
   token, checking the SHA-256 of what arrives (a mismatch is refused), into a
   private folder (0700) that is removed afterwards;
3. resolves the device on this node and captures this node's environment;
4. executes the run with the existing executors in a child process
   (``service.runners.child``, in its own process group, killed with this
   process), so the python kind's sandboxing applies, and measures what it used;
5. posts the run's progress as it happens, uploads the model file, the
   predictions file and ``execution.json`` (the result's details) by
   ``PUT .../outputs?name=...``, checking the digest the ledger stored;
6. prints the :class:`Outcome` as its last line: ``MLLEDGER-OUTCOME <json>``.

A stop (``ray job stop``: SIGTERM) kills the execution at once and reports
the run as stopped. The process exits 0 whenever it printed an outcome, failed
runs included, and 2 when its environment does not describe a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import httpx

from domain.errors import LedgerError
from service.runners import environment
from service.runners.child import PROJECT_ROOT, ChildExecution
from service.runners.contract import ExecutionRequest
from service.runners.usage import measured
from service.runners.work import Input, Outcome, Output, WorkOrder

OUTCOME_MARK = "MLLEDGER-OUTCOME "
"""The job prints its outcome as its last log line: this mark, then ``Outcome.to_json()`` as JSON."""
ENV_ORDER = "MLLEDGER_WORK_ORDER"
ENV_TOKEN = "MLLEDGER_RUN_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_LEDGER = "MLLEDGER_LEDGER_URL"
ENV_DEVICE = "MLLEDGER_DEVICE"
RUN_TOKEN_HEADER = "X-Run-Token"  # noqa: S105 - a header name, not a secret
CHUNK = 1024 * 1024
POLL_SECONDS = 0.25
KILL_GRACE_SECONDS = 1.0
TIME_LIMIT_GRACE_SECONDS = 5.0
TRANSFER_TRIES = 5
ERROR_MAX = 4096


@dataclass
class Backoff:
    """Doubling waits between tries, from ``first`` up to ``longest`` seconds, reset by a success."""

    first: float = 1.0
    longest: float = 30.0
    current: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The wait before the next try (and doubles the one after)."""
        self.current = self.first if self.current == 0 else min(self.longest, self.current * 2)
        return self.current

    def reset(self) -> None:
        """A try succeeded: start again from ``first`` next time."""
        self.current = 0.0


class LedgerUnreachable(LedgerError):
    """The ledger could not be reached or answered with a server error (tried again before giving up)."""

    title = "Ledger unreachable"


class Stopped(BaseException):
    """The job was asked to stop (SIGTERM or SIGINT)."""


@dataclass(frozen=True)
class JobSettings:
    """What the job was given: the work order (with the run token), the ledger's URL, the device asked for."""

    order: WorkOrder
    ledger_url: str
    device: str

    @classmethod
    def take(cls, env: MutableMapping[str, str]) -> JobSettings:
        """Read the job's settings out of ``env`` and remove them, and every ``RAY_*`` variable, from it."""
        described = json.loads(env[ENV_ORDER])
        described["run_token"] = env[ENV_TOKEN]
        settings = cls(WorkOrder.from_json(described), env[ENV_LEDGER].rstrip("/"), env.get(ENV_DEVICE) or "auto")
        for name in [*[n for n in env if n.startswith("RAY_")], ENV_ORDER, ENV_TOKEN, ENV_LEDGER, ENV_DEVICE]:
            env.pop(name, None)
        return settings


def media_type_of(path: Path) -> str:
    """The media type an output is recorded with."""
    return "application/json" if path.suffix == ".json" else "application/octet-stream"


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _problem(answer: httpx.Response) -> str:
    """The one-line reason of a refused request (a problem's ``detail``, else the body's start)."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:300] or answer.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]


class RunLedger:
    """The run-scoped part of the ledger's runner API, used with the run's token only."""

    def __init__(self, client: httpx.Client, order: WorkOrder, backoff: Backoff | None = None) -> None:
        self.client = client
        self.order = order
        self.base = f"/v1/runner/runs/{order.run_id}"
        self.backoff = backoff or Backoff(first=0.5, longest=8.0)

    def _retrying(self, what: str, attempt: Any) -> Any:
        """Call ``attempt()`` until it answers; transport errors and 5xx answers are retried a few times."""
        self.backoff.reset()
        for tried in range(1, TRANSFER_TRIES + 1):
            try:
                answer = attempt()
            except httpx.HTTPError as exc:
                reason = f"cannot reach the ledger to {what}: {exc}"
            else:
                if answer.status_code < 500:
                    if answer.status_code >= 400:
                        raise LedgerError(f"the ledger refused to {what} ({answer.status_code}): {_problem(answer)}")
                    return answer
                reason = f"the ledger failed to {what} ({answer.status_code}): {_problem(answer)}"
            if tried == TRANSFER_TRIES:
                raise LedgerUnreachable(reason)
            time.sleep(self.backoff.next())
        raise AssertionError("unreachable")  # pragma: no cover

    def download(self, item: Input, folder: Path) -> Path:
        """Download one input into ``folder``, named by its digest; refuse it when its SHA-256 differs."""
        target = folder / item.digest.removeprefix("sha256:")
        temporary = folder / f".{target.name}.partial"

        def attempt() -> httpx.Response:
            hasher = hashlib.sha256()
            with self.client.stream("GET", f"{self.base}/inputs/{item.digest}") as answer:
                if answer.status_code != 200:
                    answer.read()
                    return answer
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as sink:
                    for chunk in answer.iter_bytes(CHUNK):
                        hasher.update(chunk)
                        sink.write(chunk)
            found = "sha256:" + hasher.hexdigest()
            if found != item.digest:
                temporary.unlink(missing_ok=True)
                raise LedgerError(f"input {item.name} arrived with digest {found}, not {item.digest}; refusing it")
            return answer

        try:
            self._retrying(f"download input {item.name}", attempt)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    def upload(self, path: Path) -> Output:
        """Upload one output file; return it by digest, checked against the digest the ledger stored."""
        digest = file_digest(path)

        def attempt() -> httpx.Response:
            with path.open("rb") as handle:
                return self.client.put(
                    f"{self.base}/outputs",
                    params={"name": path.name},
                    content=_chunks(handle),
                    headers={"Content-Type": "application/octet-stream"},
                )

        stored = self._retrying(f"upload output {path.name}", attempt).json()
        if stored.get("digest") != digest:
            raise LedgerError(f"output {path.name} was stored with digest {stored.get('digest')}, not {digest}")
        return Output(path.name, digest, int(stored["size"]), media_type_of(path))

    def progress(self, points: list[dict[str, Any]]) -> bool:
        """Post metric points as the run's progress (one try); whether the ledger took them."""
        try:
            answer = self.client.post(f"{self.base}/metrics", json={"points": points})
        except httpx.HTTPError:
            return False
        return answer.status_code < 300


def _die_with_parent() -> None:
    """In the execution child: be killed when this job's process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_child(request: ExecutionRequest, timeout: float | None) -> ChildExecution:
    """Start ``python -m service.runners.child`` for ``request`` in its own process group, dying with this one."""
    request_file = request.output_dir / "request.json"
    request_file.write_text(json.dumps(request.to_json()), encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_", "MLLEDGER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    with (request.output_dir / "child.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.runners.child", str(request_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return ChildExecution(process, request.output_dir, timeout)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT (``ray job stop``) into :class:`Stopped` while the block runs."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Job:
    """One run executing on this node."""

    def __init__(self, settings: JobSettings, client: httpx.Client, folder: Path) -> None:
        self.order = settings.order
        self.asked_device = settings.device
        self.ledger = RunLedger(client, self.order)
        self.folder = folder
        self.unposted: list[dict[str, Any]] = []
        self.posting = True
        self.environment: dict[str, Any] | None = None
        self.resources: dict[str, Any] = {"host": socket.gethostname()[:200] or "unknown", "backend": "ray"}

    def failed(self, error: str) -> Outcome:
        """A failed outcome with whatever is known so far."""
        return Outcome(
            ok=False,
            metrics=self.unposted,
            error=error[-ERROR_MAX:],
            environment=self.environment,
            resources=self.resources,
        )

    def run(self) -> Outcome:
        """Fetch, execute, upload; the outcome (never raises for a failed run)."""
        try:
            device, _note = environment.resolve_device(self.asked_device)
            request = self.prepare(device)
            with measured(device, "ray") as usage:
                execution = start_child(request, self.time_limit())
                try:
                    self.follow(execution)
                finally:
                    execution.kill(KILL_GRACE_SECONDS)
            self.resources = self.measured(request, usage.resources)
            self.collect(execution)
            result = execution.result()
            details = request.output_dir / "execution.json"
            details.write_text(json.dumps(result.details, sort_keys=True, default=str), encoding="utf-8")
            outputs = [self.ledger.upload(path) for path in (result.model_file, result.predictions_file, details)]
        except Stopped as exc:
            return self.failed(f"the Ray job was stopped ({exc}) before the run finished")
        except LedgerError as exc:  # ExecutionError included
            return self.failed(exc.detail)
        return Outcome(
            ok=True, metrics=self.unposted, outputs=outputs, environment=self.environment, resources=self.resources
        )

    def time_limit(self) -> float | None:
        """How long the execution child may run: the python kind's time limit and a grace (it enforces its own)."""
        limit = self.order.time_limit if self.order.kind == "python" else None
        return None if limit is None else limit + TIME_LIMIT_GRACE_SECONDS

    def prepare(self, device: str) -> ExecutionRequest:
        """Download the inputs, capture this node's environment and lay out the execution request."""
        inputs = self.folder / "inputs"
        inputs.mkdir(mode=0o700)
        datasets = [self.ledger.download(item, inputs) for item in self.order.datasets]
        code = self.order.code
        archive = None if code is None else self.ledger.download(code, inputs)
        captured = environment.capture_environment(device, self.order.seed, {})
        captured["backend"] = "ray"
        captured["digest"] = environment.environment_digest(captured)
        self.environment = captured
        output_dir = self.folder / "out"
        output_dir.mkdir(mode=0o700)
        return ExecutionRequest(
            kind=self.order.kind,
            spec=self.order.spec,
            params=dict(self.order.params),
            seed=self.order.seed,
            device=device,
            datasets=datasets,
            code_archive=archive,
            output_dir=output_dir,
        )

    def follow(self, execution: ChildExecution) -> None:
        """Wait for the child, posting its progress as it comes."""
        while execution.poll() is None:
            self.collect(execution)
            time.sleep(POLL_SECONDS)

    def collect(self, execution: ChildExecution) -> None:
        """Post the progress written since the last look; keep it for the outcome once a post fails."""
        for batch in execution.read_progress():
            if self.posting and not self.unposted and self.ledger.progress(batch):
                continue
            self.posting = False
            self.unposted.extend(batch)

    def measured(self, request: ExecutionRequest, around: dict[str, Any]) -> dict[str, Any]:
        """What the execution used: the child's own figures when it wrote them, else those taken around it."""
        figures = dict(around)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            written = json.loads((request.output_dir / "result.json").read_text(encoding="utf-8")).get("resources")
            if isinstance(written, dict) and written:
                figures = dict(written)
        return figures | {"host": self.resources["host"], "backend": "ray"}


def run_job(settings: JobSettings) -> Outcome:
    """Execute the run ``settings`` describe in a private folder (removed afterwards); its outcome."""
    folder = Path(tempfile.mkdtemp(prefix=f"mlledger-ray-{settings.order.run_id[:40]}-"))
    folder.chmod(0o700)
    timeout = httpx.Timeout(60.0, connect=10.0)
    headers = {RUN_TOKEN_HEADER: settings.order.run_token}
    try:
        with (
            httpx.Client(base_url=settings.ledger_url, headers=headers, timeout=timeout) as client,
            _stop_on_signals(),
        ):
            try:
                return Job(settings, client, folder).run()
            except Stopped as exc:
                return Outcome(ok=False, error=f"the Ray job was stopped ({exc}) before the run started")
            except Exception as exc:  # a crash of the job itself is reported as the run's error
                traceback.print_exc()
                return Outcome(ok=False, error=f"the Ray job crashed: {type(exc).__name__}: {exc}"[:ERROR_MAX])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    """Run the job described by this process's environment and print its outcome."""
    try:
        settings = JobSettings.take(os.environ)
    except (KeyError, ValueError, TypeError) as exc:
        print(f"ray_job: the job's environment does not describe a run: {exc!r}", file=sys.stderr)
        return 2
    outcome = run_job(settings)
    print(OUTCOME_MARK + json.dumps(outcome.to_json(), separators=(",", ":"), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
