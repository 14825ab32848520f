"""The Ray backend: each run executes as a Ray job, submitted through the Ray Jobs API.

A run's job has the run id as its submission id, so the cluster itself refuses
a second job for the same run, and a runner that takes over the run of a dead
runner finds the job by that id (:meth:`RayBackend.reattach`). The job runs
``<python> -m service.runners.ray_job`` on whichever node the cluster picks,
with the resources the pipeline spec asks for (``cpus``, default 1; ``gpus``,
default 1 for a ``cuda`` run; ``memory_mb``). It is handed the work order, the
ledger's URL and the run's token in its environment, and nothing else: never the
runner's API key or its signing key. With the token it downloads exactly that
run's inputs and uploads its outputs and progress while the run is active (see
``ray_job.py``), then prints its :class:`Outcome` as the last line of its log
(``MLLEDGER-OUTCOME <json>``), which the runner reads back.

Nodes need the same interpreter and packages as the runner (the same image or
virtual environment, at the same path: ``python`` names it), since the job
runs the project's own code.

The cluster's token authentication stays on: the runner passes the cluster's
token (``token``, else ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
or ``~/.ray/auth_token`` names) as a bearer token on every request. A cluster
that cannot be reached raises :class:`ClusterUnavailable`; the runner then
leaves runs requested and retries with a growing wait. A cluster that stops
answering while a run executes (or while its job is being submitted) is waited
for, up to ``lost_after`` seconds; a job the cluster no longer knows (it was
restarted) fails its run with that reason. Ray is an optional
extra (``pip install 'mlledger[ray]'``): it is imported only when the backend
first talks to a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.errors import LedgerError
from service.runners.gateway import LedgerUnavailable
from service.runners.ray_job import ENV_DEVICE, ENV_LEDGER, ENV_ORDER, ENV_TOKEN, OUTCOME_MARK
from service.runners.work import Outcome, WorkOrder

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4096
REQUEST_TIMEOUT_SECONDS = 10.0
READY_CACHE_SECONDS = 1.0
LOST_AFTER_SECONDS = 120.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


STOP_TRIES = 3
"""How often cancelling a run asks the cluster to stop its job before a thread goes on asking."""
STOP_RETRY_SECONDS = 1.0
STOP_RETRY_LONGEST_SECONDS = 10.0


class ClusterUnavailable(LedgerUnavailable):
    """The Ray cluster cannot be reached (or refused the runner's token); runs stay requested and the runner retries.

    A case of :class:`LedgerUnavailable`: the runner backs off and tries again, as when the ledger is down.
    """

    title = "Ray cluster unavailable"


class RayJobExists(LedgerError):
    """The cluster already has a job for this run: Ray refuses a second submission with the same id."""

    title = "Ray job exists"


class RayJobRefused(LedgerError):
    """The cluster refused a job submission (bad resources, no such interpreter, ...)."""

    title = "Ray job refused"


def cluster_token(token: str | None = None) -> str | None:
    """The Ray cluster's token: ``token``, else ``RAY_AUTH_TOKEN``, else the token file (None without one)."""
    if token:
        return token
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        found = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return found or None


def job_resources(order: WorkOrder, device: str) -> dict[str, Any]:
    """The ``entrypoint_*`` resources of a run's job: what the spec asks, 1 CPU by default, 1 GPU for cuda."""
    asked = order.resources
    cpus = float(asked.get("cpus") or 1)
    gpus = float(asked.get("gpus") or (1 if device == "cuda" else 0))
    resources: dict[str, Any] = {"entrypoint_num_cpus": cpus, "entrypoint_num_gpus": gpus}
    if asked.get("memory_mb"):
        resources["entrypoint_memory"] = int(float(asked["memory_mb"]) * 1024 * 1024)
    return resources


def _timed_client(address: str, headers: dict[str, str], timeout: float) -> JobSubmissionClient:
    """A Jobs API client whose every request gives up after ``timeout`` seconds (Ray's own waits forever)."""
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient(address, headers=headers)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the cluster could not be reached (as opposed to refusing a request)."""
    import requests
    from ray.exceptions import AuthenticationError

    return isinstance(exc, ConnectionError | requests.exceptions.RequestException | AuthenticationError)


def _short(exc: BaseException) -> str:
    """Why a request did not get through, in a few words."""
    text = str(exc)
    if isinstance(exc, ConnectionError) and text.startswith("Failed to connect"):
        return "nothing answers there"
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out")):
        if needle in text:
            return short
    if "Remote end closed" in text or "Connection aborted" in text:
        return "the connection was closed"
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def _missing(exc: BaseException) -> bool:
    """Whether ``exc`` is the Jobs API's 404: no job with that id."""
    return isinstance(exc, RuntimeError) and "status code 404" in str(exc)


class RayExecution:
    """One run's Ray job: polled by status, its outcome read from the job's log."""

    def __init__(self, backend: RayBackend, order: WorkOrder, device: str, *, submitted: bool = True) -> None:
        self.backend = backend
        self.order = order
        self.device = device
        self.submission_id = order.run_id
        self.submitted = submitted
        self.status: str | None = None
        self.message: str | None = None
        self.lost: str | None = None
        self.cancelled = False
        self._in_doubt = False
        self._unreachable_reason = ""
        self._unreachable_since: float | None = None
        self.stopper: threading.Thread | None = None
        """The thread that goes on asking the cluster to stop a cancelled run's job, if one had to."""

    def submit(self) -> bool:
        """Submit the job unless that was done; False while the cluster cannot be reached.

        The first try raises :class:`RayJobExists` for a run that already has a job. After a try the
        cluster may have taken before it stopped answering, a job that is there is this one.
        """
        if self.submitted:
            return True
        try:
            self.backend.submit(self.order, self.device)
        except ClusterUnavailable as exc:
            if not self._in_doubt:
                log.warning("run %s: %s; submitting it when the cluster answers", self.submission_id, exc.detail)
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            self._in_doubt = True
            self._unreachable_reason = exc.detail
            return False
        except RayJobExists:
            if not self._in_doubt:
                raise
        self.submitted = True
        self._unreachable_since = None
        return True

    def finished(self) -> bool:
        """Whether the job has ended, or is lost (the cluster forgot it, or was unreachable too long)."""
        if self.lost is not None or self.status in TERMINAL:
            return True
        if not self.submitted:
            if self.cancelled:
                return True
            try:
                if not self.submit():
                    return self._still_unreachable(self._unreachable_reason)
            except RayJobRefused as exc:
                self.lost = exc.detail
                return True
        try:
            info = self.backend.client().get_job_info(self.submission_id)
        except ClusterUnavailable as exc:
            return self._still_unreachable(exc.detail)
        except Exception as exc:
            if _unreachable(exc):
                return self._still_unreachable(self.backend.unavailable(exc).detail)
            if _missing(exc):
                self.lost = (
                    f"the Ray cluster at {self.backend.address} no longer has job {self.submission_id} "
                    "(the cluster was restarted or the job was deleted)"
                )
                return True
            raise
        self._unreachable_since = None
        self.status = str(info.status.value if hasattr(info.status, "value") else info.status)
        self.message = info.message
        # Ray delivers a stop to a job that is still waiting for resources only once it starts:
        # for the runner, a cancelled job that never started has ended.
        return self.status in TERMINAL or (self.cancelled and self.status == "PENDING")

    def _still_unreachable(self, reason: str) -> bool:
        """Keep waiting for a cluster that cannot be reached, up to the backend's ``lost_after`` seconds."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            log.warning("run %s: %s; waiting for the Ray cluster to come back", self.submission_id, reason)
        elif now - self._unreachable_since > self.backend.lost_after:
            never = "" if self.submitted else " (the run's job was never submitted)"
            self.lost = f"the Ray cluster could not be reached for {self.backend.lost_after:g} s{never}: {reason}"
            return True
        return False

    def progress(self) -> list[dict[str, Any]]:
        """Nothing: the job posts its progress to the ledger itself, with the run's token."""
        return []

    def logs(self) -> str:
        """The job's whole log ('' when it cannot be read)."""
        try:
            return str(self.backend.client().get_job_logs(self.submission_id))
        except ClusterUnavailable:
            return ""
        except Exception as exc:
            if _unreachable(exc) or _missing(exc):
                return ""
            raise

    def outcome(self) -> Outcome:
        """The outcome the job printed; a failure with the log's tail when it printed none."""
        resources = {"backend": "ray"}
        if self.cancelled:
            return Outcome(ok=False, error="cancelled", resources=resources)
        if self.lost is not None:
            return Outcome(ok=False, error=self.lost, resources=resources)
        text = self.logs()
        printed = parse_outcome(text)
        if printed is not None:
            return printed
        tail = text[-LOG_TAIL_BYTES:].strip()
        status = (self.status or "unknown").lower()
        error = f"the Ray job {self.submission_id} ended {status} without an outcome"
        if self.message:
            error += f" ({self.message.strip()})"
        if tail:
            error += f"; its log ends: {tail}"
        return Outcome(ok=False, error=error[-LOG_TAIL_BYTES:], resources=resources)

    def cancel(self) -> None:
        """Stop the job (Ray sends SIGTERM, then SIGKILL); a job that already ended is left as it is.

        A job still waiting for resources is stopped by Ray as soon as it starts (or fails once
        Ray's start timeout, ``RAY_JOB_START_TIMEOUT_SECONDS``, passes); its run counts as ended now.
        The stop is asked up to ``STOP_TRIES`` times here; if the cluster took none of them (it
        found no supervisor to tell while the job runs, or could not be reached), a thread of this
        runner goes on asking, with a growing wait, until the job has ended or ``lost_after``
        seconds have passed, so a cancelled run's job is not left running on the cluster.
        """
        self.cancelled = True
        reason = ""
        for attempt in range(1, STOP_TRIES + 1):
            reason = self._ask_to_stop()
            if not reason:
                log.info("run %s: asked the Ray cluster to stop its job", self.submission_id)
                return
            log.warning(
                "run %s: cannot stop its Ray job (try %d of %d): %s", self.submission_id, attempt, STOP_TRIES, reason
            )
            if attempt < STOP_TRIES:
                time.sleep(1.0 * attempt)
        self.stopper = threading.Thread(
            target=self._keep_asking_to_stop, name=f"stop-{self.submission_id}", daemon=True
        )
        self.stopper.start()

    def _ask_to_stop(self) -> str:
        """Ask the cluster once to stop the job: '' when it took the stop or the job has ended (or is
        gone), else why not."""
        try:
            client = self.backend.client()
            if client.stop_job(self.submission_id):
                return ""
            # Ray found no supervisor to tell (the job ended, or it is between states): done only if it ended.
            found = client.get_job_status(self.submission_id)
            status = str(getattr(found, "value", found))
            return "" if status in TERMINAL else f"the cluster did not take the stop (the job is {status})"
        except ClusterUnavailable as exc:
            return exc.detail
        except Exception as exc:
            if _missing(exc):
                return ""
            if _unreachable(exc):
                return str(exc)
            raise

    def _keep_asking_to_stop(self) -> None:
        deadline = time.monotonic() + self.backend.lost_after
        wait = STOP_RETRY_SECONDS
        reason = ""
        while time.monotonic() < deadline:
            time.sleep(wait)
            wait = min(wait * 2, STOP_RETRY_LONGEST_SECONDS)
            try:
                reason = self._ask_to_stop()
            except Exception as exc:  # a thread of its own: say what went wrong and go on asking
                reason = f"{type(exc).__name__}: {exc}"
            if not reason:
                log.info("run %s: its Ray job was stopped", self.submission_id)
                return
        log.error(
            "run %s: gave up stopping its Ray job after %g s (%s); stop it with `ray job stop %s`",
            self.submission_id,
            self.backend.lost_after,
            reason,
            self.submission_id,
        )


def parse_outcome(log_text: str) -> Outcome | None:
    """The outcome a job printed last in its log, or None when it printed none (or a broken one)."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(OUTCOME_MARK):
            try:
                return Outcome.from_json(json.loads(line[len(OUTCOME_MARK) :]))
            except (ValueError, KeyError, TypeError):
                return None
    return None


class RayBackend:
    """Runs execute as Ray jobs on the cluster whose Jobs API (dashboard) is at ``address``."""

    name = "ray"
    devices_here = False
    jobs_outlive_runner = True

    def __init__(
        self,
        address: str,
        *,
        ledger_url: str,
        python: str = sys.executable,
        token: str | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        lost_after: float = LOST_AFTER_SECONDS,
    ) -> None:
        if "://" not in address:
            address = f"http://{address}"
        self.address = address.rstrip("/")
        self.ledger_url = ledger_url.rstrip("/")
        self.python = python
        self.token = cluster_token(token)
        self.timeout = timeout
        self.lost_after = lost_after
        self._client: JobSubmissionClient | None = None
        self._ready_until = 0.0

    @property
    def entrypoint(self) -> str:
        """The shell command a job runs on its node."""
        return f"{shlex.quote(self.python)} -m service.runners.ray_job"

    def client(self) -> JobSubmissionClient:
        """The Jobs API client, connected on first use; :class:`ClusterUnavailable` when it cannot connect."""
        if self._client is None:
            headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
            try:
                self._client = _timed_client(self.address, headers, self.timeout)
            except Exception as exc:
                raise self.unavailable(exc) from None
        return self._client

    def unavailable(self, exc: BaseException) -> ClusterUnavailable:
        """The error that says why the cluster could not be reached (or refused the token)."""
        from ray.exceptions import AuthenticationError

        if isinstance(exc, AuthenticationError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "authentication failed"
            return ClusterUnavailable(f"the Ray cluster at {self.address} refused the runner's token: {first}")
        return ClusterUnavailable(f"the Ray cluster at {self.address} cannot be reached ({_short(exc)})")

    def ready(self) -> bool:
        """Whether the cluster answers now (a positive answer is trusted for a couple of seconds)."""
        if time.monotonic() < self._ready_until:
            return True
        try:
            self.client().get_version()
        except ClusterUnavailable:
            return False
        except Exception as exc:
            if _unreachable(exc):
                return False
            raise
        self._ready_until = time.monotonic() + READY_CACHE_SECONDS
        return True

    def job_environment(self, order: WorkOrder, device: str) -> dict[str, str]:
        """What the job is told: the work order (without its token), the run token, the ledger's URL, the device."""
        described = order.to_json()
        described.pop("run_token", None)
        return {
            ENV_ORDER: json.dumps(described, separators=(",", ":")),
            ENV_TOKEN: order.run_token,
            ENV_LEDGER: self.ledger_url,
            ENV_DEVICE: device,
        }

    def submit(self, order: WorkOrder, device: str) -> None:
        """Submit the run's job (submission id = run id) with the resources its spec asks for."""
        try:
            self.client().submit_job(
                entrypoint=self.entrypoint,
                submission_id=order.run_id,
                runtime_env={"env_vars": self.job_environment(order, device)},
                metadata={"mlledger_run_id": order.run_id, "mlledger_kind": order.kind},
                **job_resources(order, device),
            )
        except ClusterUnavailable:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise self.unavailable(exc) from None
            text = str(exc)
            if "already exists" in text:
                raise RayJobExists(f"the Ray cluster already has a job for run {order.run_id}") from None
            if isinstance(exc, RuntimeError | ValueError):
                reason = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
                raise RayJobRefused(f"the Ray cluster refused the job of run {order.run_id}: {reason}") from None
            raise
        log.info("run %s submitted to the Ray cluster at %s", order.run_id, self.address)

    def start(self, order: WorkOrder, device: str | None = None) -> RayExecution:
        """Submit the run's job; :class:`ClusterUnavailable` when the cluster cannot be reached at all.

        When the cluster stops answering during the submission itself (it may or may not have taken
        the job), the execution submits again as soon as the cluster answers, taking a job that is
        already there for its own, and fails the run once the cluster stayed away ``lost_after`` seconds.
        """
        self.client()
        execution = RayExecution(self, order, device or order.device, submitted=False)
        execution.submit()
        return execution

    def reattach(self, order: WorkOrder, device: str | None = None) -> RayExecution | None:
        """The job of a run another runner submitted (running or ended), or None when the cluster has none."""
        try:
            self.client().get_job_info(order.run_id)
        except Exception as exc:
            if isinstance(exc, ClusterUnavailable):
                raise
            if _unreachable(exc):
                raise self.unavailable(exc) from None
            if _missing(exc):
                return None
            raise
        return RayExecution(self, order, device or order.device)

    def close(self) -> None:
        """Nothing to let go of: jobs go on running on the cluster (another runner may re-attach)."""
        self._client = None


__all__ = [
    "OUTCOME_MARK",
    "ClusterUnavailable",
    "RayBackend",
    "RayExecution",
    "RayJobExists",
    "RayJobRefused",
    "cluster_token",
    "job_resources",
    "parse_outcome",
]
