"""Benchmark helpers for the Ray backend: a Ray head of the benchmark's own, and when Ray says each job ran.

The head is the test suite's single-node cluster (``tests/support/ray_cluster.py``):
``ray start --head`` bound to 127.0.0.1 on free ports, token authentication on
(a fresh token), its own temp dir, stopped with every process it started when
the benchmark ends, also on failure, Ctrl-C or SIGTERM. Runners get the token
as ``RAY_AUTH_TOKEN`` (:func:`runner_ray_env`) and ``--ray-address`` (:func:`runner_ray_args`).

The Jobs API keeps no time for a job's PENDING -> RUNNING step: ``JobDetails.start_time``
is when the job manager accepted the submission (the job is then PENDING), and
``end_time`` when it ended. :class:`JobWatcher` therefore asks for every job's
status (``list_jobs``, one request) every ``interval`` seconds and keeps, per
submission id, when it was first seen past PENDING, and when the poll before it
was sent (so the step lies between the two).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support/ray_cluster.py

from support.ray_cluster import RayCluster, remove_cluster, start_cluster

from bench.append import say

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


@contextlib.contextmanager
def ray_head(num_cpus: int, num_gpus: int = 0) -> Iterator[RayCluster]:
    """A single-node Ray head on loopback with ``num_cpus`` logical CPUs (and ``num_gpus`` GPUs); stopped and
    removed on the way out."""
    say(f"starting a Ray head on 127.0.0.1 ({num_cpus} CPUs, {num_gpus} GPUs, token auth)")
    started = time.perf_counter()
    cluster = start_cluster(num_cpus, num_gpus=num_gpus)
    try:
        say(f"  Ray head up at {cluster.address} in {time.perf_counter() - started:.1f} s")
        yield cluster
    finally:
        say("stopping the Ray head")
        remove_cluster(cluster)


def runner_ray_args(address: str) -> list[str]:
    """The runner's options for the cluster whose Jobs API is at ``address``."""
    return ["--backend", "ray", "--ray-address", address.removeprefix("http://")]


def runner_ray_env(token: str | None) -> dict[str, str]:
    """What a runner needs in its environment for the cluster's token (nothing without one)."""
    return {"RAY_AUTH_TOKEN": token} if token else {}


def jobs_client(address: str, token: str | None) -> JobSubmissionClient:
    """A Jobs API client that sends the cluster's token."""
    from ray.job_submission import JobSubmissionClient

    if "://" not in address:
        address = f"http://{address}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return JobSubmissionClient(address, headers=headers)


@dataclass
class Seen:
    """When a job was first seen past PENDING, and when the poll before that one was sent."""

    status: str
    at: float
    previous_poll: float


class JobWatcher:
    """Polls the cluster's job statuses in a thread; ``seen[submission_id]`` once a job left PENDING."""

    def __init__(self, client: JobSubmissionClient, interval: float = 0.2) -> None:
        self.client = client
        self.interval = interval
        self.seen: dict[str, Seen] = {}
        self.polls: list[float] = []  # seconds each list_jobs took
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ray-jobs", daemon=True)

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        previous = time.time()
        while not self._stop.is_set():
            sent = time.time()
            try:
                jobs: list[Any] = self.client.list_jobs()
            except Exception:
                self.failures += 1
                self._stop.wait(self.interval)
                continue
            answered = time.time()
            self.polls.append(answered - sent)
            for job in jobs:
                status = str(getattr(job.status, "value", job.status))
                if job.submission_id and status != "PENDING" and job.submission_id not in self.seen:
                    self.seen[job.submission_id] = Seen(status, answered, previous)
            previous = sent
            self._stop.wait(max(0.0, self.interval - (time.time() - sent)))


def submitted_at(client: JobSubmissionClient, submission_id: str) -> float | None:
    """When the cluster accepted the job (``JobDetails.start_time``, ms), in seconds; None without a job."""
    try:
        info = client.get_job_info(submission_id)
    except RuntimeError:
        return None
    return None if info.start_time is None else info.start_time / 1000.0
