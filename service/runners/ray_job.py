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
   the child is started first, with the run's kind and spec only, so its
   interpreter and its imports (scikit-learn or torch, seconds in a fresh
   process) overlap steps 2 and 3; it is sent the request once they are done;
5. posts the run's progress as it happens, uploads the model file, the
   predictions file and ``execution.json`` (the result's details) in one
   ``PUT .../outputs:batch`` request (``RunLedger.upload_all``, as a local
   runner does), checking each digest the ledger stored;
6. prints the :class:`Outcome` as its last line: ``MLLEDGER-OUTCOME <json>``.

Before the outcome it writes where its time went to stderr (so to the job's
log): ``MLLEDGER-PHASES <json>``, seconds of each step from the process's
start (``start``: interpreter and imports, ``download``, ``capture``,
``child``: from the capture to the execution child's end, the part of its
start-up that the downloads did not hide included, ``upload``), when the
execution child had finished its imports (``ready``, seconds from the
process's start: later than the end of the capture means the child's
start-up, not the downloads, held the run back), the seconds from the process's start to the
outcome (``total``), when the process started (``started_at``, Unix time),
and the CPU seconds the job's own process used (``cpu_job``, its imports and
the environment capture included) and its execution child (``cpu_child``).

The environment capture imports torch only for runs of a kind that may load it
(:func:`environment.kind_uses_torch`): importing torch costs seconds in the
job's fresh interpreter, which a scikit-learn run would pay for nothing.

A stop (``ray job stop``: SIGTERM) kills the execution at once and reports
the run as stopped. The process exits 0 whenever it printed an outcome, failed
runs included, and 2 when its environment does not describe a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from domain.errors import LedgerError
from service.runners.child import PROJECT_ROOT, ChildExecution, WarmChild
from service.runners.contract import ExecutionRequest
from service.runners.usage import measured
from service.runners.work import Outcome, WorkOrder

if TYPE_CHECKING:
    import httpx

# httpx, the transfers and the environment capture are imported after the execution child has started
# (see main), so that this process's imports overlap the child's.

OUTCOME_MARK = "MLLEDGER-OUTCOME "
"""The job prints its outcome as its last log line: this mark, then ``Outcome.to_json()`` as JSON."""
PHASES_MARK = "MLLEDGER-PHASES "
"""The job writes the seconds of each of its steps to stderr: this mark, then a JSON object."""
ENV_ORDER = "MLLEDGER_WORK_ORDER"
ENV_TOKEN = "MLLEDGER_RUN_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_LEDGER = "MLLEDGER_LEDGER_URL"
ENV_DEVICE = "MLLEDGER_DEVICE"
RUN_TOKEN_HEADER = "X-Run-Token"  # noqa: S105 - a header name, not a secret
POLL_SECONDS = 0.25
KILL_GRACE_SECONDS = 1.0
TIME_LIMIT_GRACE_SECONDS = 5.0
ERROR_MAX = 4096


def process_started() -> float:
    """When this process started (Unix time, from ``/proc``); now where that cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, counted after the command's closing parenthesis
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text(encoding="ascii").splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class Phases:
    """Seconds of each of the job's steps, each measured from the end of the one before."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.last = started
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """The step ``name`` ended now."""
        now = time.time()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self.last, 3)
        self.last = now

    def moment(self, name: str, at: float | None) -> None:
        """Something happened at ``at`` (Unix time; nothing when None): kept as seconds from the start."""
        if at is not None:
            self.seconds[name] = round(at - self.started, 3)

    def report(self) -> dict[str, float]:
        """The steps, ``total``: from the process's start to now, ``started_at``: that start (Unix time), and the
        CPU seconds this process (``cpu_job``) and its ended children (``cpu_child``) used."""
        used = os.times()
        return self.seconds | {
            "total": round(time.time() - self.started, 3),
            "started_at": round(self.started, 3),
            "cpu_job": round(used.user + used.system, 3),
            "cpu_child": round(used.children_user + used.children_system, 3),
        }


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


def _die_with_parent() -> None:
    """In the execution child: be killed when this job's process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_child(order: WorkOrder, output_dir: Path) -> WarmChild:
    """Start the execution child for ``order`` (``--warm``) in its own process group, dying with this one: it
    imports what the run's kind needs while this process downloads the inputs."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_", "MLLEDGER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return WarmChild.start(order.kind, dict(order.spec), output_dir, "ray", env=env, preexec_fn=_die_with_parent)


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

    def __init__(
        self,
        settings: JobSettings,
        client: httpx.Client,
        folder: Path,
        phases: Phases | None = None,
        child: WarmChild | None = None,
    ) -> None:
        from service.runners.transfer import RunLedger

        self.order = settings.order
        self.child = child
        self.phases = phases or Phases(time.time())
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
        from service.runners import environment

        try:
            device, _note = environment.resolve_device(self.asked_device)
            output_dir = self.folder / "out"
            output_dir.mkdir(mode=0o700, exist_ok=True)
            with measured(device, "ray") as usage:
                child = self.child or start_child(self.order, output_dir)  # its start-up overlaps the downloads
                try:
                    request = self.prepare(device, output_dir)
                    execution = child.execute(request, self.time_limit())
                    self.follow(execution)
                finally:
                    child.kill(KILL_GRACE_SECONDS)
            self.resources = self.measured(request, usage.resources)
            self.collect(execution)
            result = execution.result()
            self.phases.mark("child")
            self.phases.moment("ready", child.ready_at())
            details = request.output_dir / "execution.json"
            details.write_text(json.dumps(result.details, sort_keys=True, default=str), encoding="utf-8")
            outputs = self.ledger.upload_all([result.model_file, result.predictions_file, details])
            self.phases.mark("upload")
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

    def prepare(self, device: str, output_dir: Path) -> ExecutionRequest:
        """Download the inputs, capture this node's environment and lay out the execution request."""
        from service.runners import environment

        inputs = self.folder / "inputs"
        inputs.mkdir(mode=0o700)
        datasets = [self.ledger.download(item, inputs) for item in self.order.datasets]
        code = self.order.code
        archive = None if code is None else self.ledger.download(code, inputs)
        self.phases.mark("download")
        uses_torch = environment.kind_uses_torch(self.order.kind)
        captured = environment.capture_environment(device, self.order.seed, {}, uses_torch=uses_torch)
        captured["backend"] = "ray"
        captured["digest"] = environment.environment_digest(captured)
        self.environment = captured
        self.phases.mark("capture")
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


def private_folder(order: WorkOrder) -> Path:
    """A new folder (0700) for ``order``'s files, named after its run."""
    folder = Path(tempfile.mkdtemp(prefix=f"mlledger-ray-{order.run_id[:40]}-"))
    folder.chmod(0o700)
    return folder


def run_job(
    settings: JobSettings,
    phases: Phases | None = None,
    folder: Path | None = None,
    child: WarmChild | None = None,
) -> Outcome:
    """Execute the run ``settings`` describe in a private folder (``folder``, or a new one; removed
    afterwards), with ``child`` when one was started for it; its outcome."""
    import httpx

    folder = folder or private_folder(settings.order)
    timeout = httpx.Timeout(60.0, connect=10.0)
    headers = {RUN_TOKEN_HEADER: settings.order.run_token}
    try:
        with (
            httpx.Client(base_url=settings.ledger_url, headers=headers, timeout=timeout) as client,
            _stop_on_signals(),
        ):
            try:
                return Job(settings, client, folder, phases, child).run()
            except Stopped as exc:
                return Outcome(ok=False, error=f"the Ray job was stopped ({exc}) before the run started")
            except Exception as exc:  # a crash of the job itself is reported as the run's error
                traceback.print_exc()
                return Outcome(ok=False, error=f"the Ray job crashed: {type(exc).__name__}: {exc}"[:ERROR_MAX])
    finally:
        if child is not None:
            child.kill(KILL_GRACE_SECONDS)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    """Run the job described by this process's environment and print its outcome."""
    phases = Phases(process_started())
    try:
        settings = JobSettings.take(os.environ)
    except (KeyError, ValueError, TypeError) as exc:
        print(f"ray_job: the job's environment does not describe a run: {exc!r}", file=sys.stderr)
        return 2
    folder = private_folder(settings.order)
    output_dir = folder / "out"
    output_dir.mkdir(mode=0o700)
    child = start_child(settings.order, output_dir)  # first: its imports overlap this process's from here on
    import httpx  # noqa: F401 - the rest of this process's imports, counted in its start

    import service.runners.environment
    import service.runners.transfer  # noqa: F401

    phases.mark("start")
    outcome = run_job(settings, phases, folder, child)
    print(PHASES_MARK + json.dumps(phases.report(), separators=(",", ":")), file=sys.stderr, flush=True)
    print(OUTCOME_MARK + json.dumps(outcome.to_json(), separators=(",", ":"), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
