"""Benchmark: runs claimed and started per second by several runner processes sharing one ledger.

``--runners`` (default 4) real runner processes (``python -m service runner
--concurrency 16 --device cpu``) serve one ledger through its API (``mlledger
serve --no-projector --no-runner --workers N`` in subprocesses, ``--api-workers``,
default 2): they hold no ledger key and no database credentials, only the API
key of a principal with the runner role, and sign each result with a key of
their own. Once every one of
them is up and has executed at least one warm-up run (its first environment
capture imports torch, a one-off cost), ``--runs`` (default 400) trivial runs
are requested at once, in one transaction (N ``Run.Requested`` events built as
``Ledger.start_run`` builds them and saved together, so requesting never limits
claiming): an sklearn ``LogisticRegression`` on a 50-row, 3-feature CSV.

From the runs' own events (``ledger.events.get(run_id)``, ``.timestamp`` =
``recorded_at``) it reports:

* claimed and started per second: N / (last ``EnvironmentCaptured`` - first
  ``Claimed``), the figure with the target (>= 50/s);
* the same for the first runners x concurrency runs (the burst that fills every
  free slot, where claiming alone is timed and execution cannot hold it back);
* the time from the request until every run succeeded;
* that every run was claimed exactly once, and how the runs were shared.

With ``--backend ray`` the runners run each run as a Ray job (``--backend ray
--ray-address ...``): on the cluster at ``--ray-address`` (its token in
``RAY_AUTH_TOKEN``), or else on a single-node Ray head the benchmark starts on
127.0.0.1 (free ports, token auth, ``--num-cpus`` logical CPUs, default 8) and
stops at the end (also on failure or Ctrl-C). It then also reports the Ray
dispatch latency, p50 and p95 over the measured runs: from the run's
``Claimed`` event to its job RUNNING. The Jobs API keeps no time for that step
(``JobDetails.start_time`` is when the cluster accepted the submission, still
PENDING), so the benchmark polls the jobs' statuses (``list_jobs``, every
``--ray-poll`` s) and takes the first poll that saw the job past PENDING, an
upper bound (the poll before it, a lower bound, is shown too); claim ->
submission accepted (``start_time``) is reported beside it. Runs on Ray take
seconds each (a fresh interpreter per job), so use fewer: ``--runs 40
--runners 2 --concurrency 4``. The >= 50/s target is the local backend's.

By default the ledger is the PostgreSQL at ``--database-url`` in a fresh schema
``bench_<random>``, dropped at the end (also on failure or Ctrl-C); with
``--sqlite`` it is a SQLite file in a temporary directory (runners then contend
for SQLite's single writer).

Run from the repository root::

    .venv/bin/python bench/claim_throughput.py
    .venv/bin/python bench/claim_throughput.py --runs 1000 --runners 4 --concurrency 32
    .venv/bin/python bench/claim_throughput.py --backend ray --runs 40 --runners 2 --concurrency 4 --num-cpus 8

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import (
    DEFAULT_DATABASE_URL,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    load_average,
    machine_line,
    opened,
    percentile,
    say,
)
from bench.ray_head import JobWatcher, jobs_client, ray_head, runner_ray_args, runner_ray_env, submitted_at
from bench.runner_api import ledger_api, runner_env, runner_principal
from domain.pipeline import Pipeline
from domain.run import Run
from service.bootstrap import Services

REPO = Path(__file__).resolve().parent.parent
TARGET_RATE = 50.0
ACTOR = "user:bench"
FEATURES = ["x1", "x2", "x3"]
PIPELINE = "tiny-logreg"
END_TOPICS = [Run.Finished.TOPIC, Run.Abandoned.TOPIC]


def tiny_csv(rows: int = 50, seed: int = 3) -> bytes:
    """A small, learnable binary classification table."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*FEATURES, "label"])
    for _ in range(rows):
        x = [round(rng.uniform(-1, 1), 6) for _ in FEATURES]
        writer.writerow([*x, int(x[0] + 0.5 * x[1] > 0)])
    return out.getvalue().encode()


def prepare(services: Services) -> str:
    """Register the dataset and the pipeline; return the dataset version id."""
    data = tiny_csv()
    blob = services.blobs.put_bytes(data)
    dataset_id = services.ledger.register_dataset_version(
        name="tiny",
        digest=blob.digest,
        size=blob.size,
        format="csv",
        schema=[],
        row_count=0,
        datasheet={},
        source="bench",
        actor=ACTOR,
    ).id
    services.ledger.add_pipeline_spec(
        name=PIPELINE,
        kind="sklearn",
        spec={
            "estimator": "sklearn.linear_model.LogisticRegression",
            "features": FEATURES,
            "target": "label",
            "task": "classification",
        },
        actor=ACTOR,
    )
    return dataset_id


def request_batch(services: Services, dataset_id: str, count: int, first_seed: int) -> tuple[list[str], float]:
    """Request ``count`` runs in one transaction (as ``start_run`` builds them); their ids and the commit time."""
    pipeline: Pipeline = services.ledger.get(Pipeline.create_id(name=PIPELINE), Pipeline)
    version = len(pipeline.specs)
    runs = [
        Run(
            name=PIPELINE,
            mode="runner",
            pipeline_id=str(pipeline.id),
            pipeline_version=version,
            spec_digest=pipeline.digests[version - 1],
            dataset_version_ids=[dataset_id],
            code_version_id=None,
            params={},
            seed=first_seed + index,
            device="auto",
            reproduces=None,
            actor=ACTOR,
        )
        for index in range(count)
    ]
    services.ledger.save(*runs)
    return [str(run.id) for run in runs], time.time()


def count_topics(services: Services, after: int, topics: list[str], wanted: set[str]) -> int:
    """How many events of ``topics`` for runs in ``wanted`` were recorded after notification ``after``."""
    seen = 0
    cursor = after + 1
    while True:
        page = services.ledger.recorder.select_notifications(cursor, 1000, topics=topics)
        seen += sum(1 for n in page if str(n.originator_id) in wanted)
        if len(page) < 1000:
            return seen
        cursor = page[-1].id + 1


def wait_ended(services: Services, run_ids: list[str], after: int, timeout: float, label: str) -> None:
    """Wait until every run has ended, printing claimed/started/ended counts on stderr."""
    wanted = set(run_ids)
    deadline = time.monotonic() + timeout
    last_line = 0.0
    while True:
        ended = count_topics(services, after, END_TOPICS, wanted)
        if ended >= len(run_ids):
            return
        now = time.monotonic()
        if now - last_line >= 2.0:
            last_line = now
            claimed = count_topics(services, after, [Run.Claimed.TOPIC], wanted)
            started = count_topics(services, after, [Run.EnvironmentCaptured.TOPIC], wanted)
            say(f"  {label}: claimed {claimed}/{len(run_ids)}, started {started}, ended {ended}, load {load_average()}")
        if now > deadline:
            raise SystemExit(f"{label}: only {ended} of {len(run_ids)} runs ended within {timeout:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def runner_processes(
    services: Services,
    count: int,
    concurrency: int,
    logs: Path,
    api_workers: int,
    backend_args: list[str] | None = None,
    backend_env: dict[str, str] | None = None,
) -> Iterator[dict[str, int]]:
    """The ledger API and ``count`` runner processes (``backend_args`` and ``backend_env`` added to each);
    yields {runner_id: pid} once all are serving."""
    command = [sys.executable, "-m", "service", "runner", "--concurrency", str(concurrency), "--device", "cpu"]
    command += backend_args or []
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    principal = runner_principal(services)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(ledger_api(services, logs / "api.log", api_workers))
        stack.callback(_stop, processes)
        for index in range(count):
            log_path = logs / f"runner-{index}.log"
            env = runner_env(url, principal, logs / f"runner-{index}.pem") | (backend_env or {})
            with log_path.open("wb") as log:
                process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            processes.append((process, log_path))
        ids: dict[str, int] = {}
        deadline = time.monotonic() + 180
        while len(ids) < count:
            for process, log_path in processes:
                if process.poll() is not None:
                    raise SystemExit(f"a runner exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
                found = re.search(r"runner (\S+) on ", log_path.read_text(errors="replace"))
                if found:
                    ids[found.group(1)] = process.pid
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(ids)} of {count} runners started within 180 s")
            time.sleep(0.1)
        yield ids


def _stop(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for process, _ in processes:
        if process.poll() is None:
            process.terminate()
    for process, _ in processes:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunTimes:
    """What one run's events say."""

    claims: int
    runner_id: str | None
    claimed: float | None
    started: float | None
    ended: float | None
    status: str | None


def run_times(services: Services, run_id: str) -> RunTimes:
    """Claims, runner, Claimed/EnvironmentCaptured/Finished times and the status of a run."""
    events = list(services.ledger.events.get(uuid.UUID(run_id)))  # a str id finds nothing on SQLite
    claims = [e for e in events if isinstance(e, Run.Claimed)]
    started = [e for e in events if isinstance(e, Run.EnvironmentCaptured)]
    finished = [e for e in events if isinstance(e, Run.Finished)]
    return RunTimes(
        len(claims),
        claims[0].runner_id if claims else None,
        claims[0].timestamp.timestamp() if claims else None,
        started[0].timestamp.timestamp() if started else None,
        finished[-1].timestamp.timestamp() if finished else None,
        finished[-1].status
        if finished
        else ("abandoned" if any(isinstance(e, Run.Abandoned) for e in events) else None),
    )


@dataclass
class Dispatch:
    """When a run's Ray job was accepted and first seen RUNNING (poll upper and lower bound), from its claim."""

    submitted: float | None  # Claimed -> JobDetails.start_time
    running: float | None  # Claimed -> the first poll that saw the job past PENDING
    running_after: float | None  # Claimed -> the poll before that one (the step came after it)
    first_seen: str | None  # the status that poll saw (a job can end between two polls)


def dispatch_of(client: Any, watcher: JobWatcher, run_id: str, times: RunTimes) -> Dispatch:
    """How long after its claim a run's job was accepted by the cluster and seen running."""
    if times.claimed is None:
        return Dispatch(None, None, None, None)
    accepted = submitted_at(client, run_id)
    seen = watcher.seen.get(run_id)
    return Dispatch(
        None if accepted is None else accepted - times.claimed,
        None if seen is None else seen.at - times.claimed,
        None if seen is None else max(seen.previous_poll, accepted or times.claimed) - times.claimed,
        None if seen is None else seen.status,
    )


def p50_p95(values: list[float]) -> str:
    """``p50 / p95`` in ms (nearest rank)."""
    if not values:
        return "n/a"
    return f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.95) * 1000:.0f} ms"


def print_dispatch(dispatch: list[Dispatch], polls: list[float], interval: float, where: str) -> None:
    """The Ray dispatch figures of the measured runs."""
    accepted = [d.submitted for d in dispatch if d.submitted is not None]
    running = [d.running for d in dispatch if d.running is not None]
    after = [d.running_after for d in dispatch if d.running_after is not None]
    ended_unseen = sum(1 for d in dispatch if d.first_seen not in (None, "RUNNING"))
    print(f"Ray dispatch on {where}, {len(dispatch)} measured runs (each its own Ray job):")
    rows = [
        ("claim -> job accepted, PENDING (JobDetails.start_time)", p50_p95(accepted), len(accepted)),
        ("claim -> job RUNNING (first poll that saw it past PENDING)", p50_p95(running), len(running)),
        ("  lower bound (the poll before it, or acceptance)", p50_p95(after), len(after)),
    ]
    for measure, value, count in rows:
        print(f"  {measure:<60} p50 / p95 {value:>18}  ({count} jobs)")
    if polls:
        print(
            f"  job statuses polled every {interval:g} s (list_jobs, median {statistics.median(polls) * 1000:.0f} ms, "
            f"{len(polls)} polls); {ended_unseen} jobs first seen already ended"
        )


def warm_up(services: Services, dataset_id: str, runner_ids: dict[str, int], per_runner: int) -> tuple[int, float]:
    """Warm-up batches until every runner has executed a run; (runs, seconds)."""
    started = time.perf_counter()
    total = 0
    served: set[str] = set()
    for attempt in range(5):
        after = services.ledger.position()
        batch = per_runner * len(runner_ids)
        run_ids, _ = request_batch(services, dataset_id, batch, 1_000_000 + total)
        total += batch
        wait_ended(services, run_ids, after, 600, f"warm-up {attempt + 1}")
        served |= {t.runner_id for t in (run_times(services, r) for r in run_ids) if t.runner_id}
        if served >= set(runner_ids):
            break
    else:
        say(f"  warning: runners {sorted(set(runner_ids) - served)} executed no warm-up run")
    return total, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--runs", type=int, default=400, help="runs requested at once (default 400)")
    parser.add_argument("--runners", type=int, default=4, help="runner processes (default 4)")
    parser.add_argument("--concurrency", type=int, default=16, help="runs each runner executes at once (default 16)")
    parser.add_argument("--warmup", type=int, default=4, help="warm-up runs per runner (default 4)")
    parser.add_argument("--api-workers", type=int, default=2, help="ledger API processes (default 2)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all runs (default 900)")
    parser.add_argument("--backend", choices=["local", "ray"], default="local", help="the runners' backend")
    parser.add_argument(
        "--ray-address", default=None, help="the Ray Jobs API (host:port) for --backend ray (default: start a head)"
    )
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the Ray head it starts (default 8)")
    parser.add_argument("--ray-poll", type=float, default=0.2, help="seconds between job status polls (default 0.2)")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    load_before = load_average()
    ray = args.backend == "ray"
    dispatch: list[Dispatch] = []
    poll_seconds: list[float] = []
    ray_where = ""
    client: Any = None

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlledger-claims-"))
        backend_args: list[str] = []
        backend_env: dict[str, str] = {}
        if ray:
            if args.ray_address:
                address, token = args.ray_address, os.environ.get("RAY_AUTH_TOKEN")
                ray_where = f"the Ray cluster at {address}"
            else:
                cluster = stack.enter_context(ray_head(args.num_cpus))
                address, token = cluster.address, cluster.token
                ray_where = f"a single-node Ray head on 127.0.0.1 ({args.num_cpus} logical CPUs, token auth)"
            backend_args, backend_env = runner_ray_args(address), runner_ray_env(token)
            client = jobs_client(address, token)
        settings = stack.enter_context(fresh_settings(args.database_url, args.sqlite))
        database = describe_database(settings)
        with opened(settings) as services:
            dataset_id = prepare(services)
            say(f"starting {args.runners} runners (--concurrency {args.concurrency}, cpu, {args.backend} backend)")
            with runner_processes(
                services, args.runners, args.concurrency, Path(tmp), args.api_workers, backend_args, backend_env
            ) as ids:
                say(f"runners up: {', '.join(ids)}; warm-up")
                warm_runs, warm_seconds = warm_up(services, dataset_id, ids, args.warmup)
                say(f"  warm-up: {warm_runs} runs in {warm_seconds:.1f} s")
                with JobWatcher(client, args.ray_poll) if ray else contextlib.nullcontext() as watcher:
                    say(f"requesting {args.runs} runs in one transaction, load {load_average()}")
                    after = services.ledger.position()
                    requested_at = time.time()
                    run_ids, committed_at = request_batch(services, dataset_id, args.runs, 0)
                    wait_ended(services, run_ids, after, args.timeout, "measured")
                    load_during = load_average()
            say("reading the runs' events")
            times = [run_times(services, run_id) for run_id in run_ids]
            if watcher is not None:
                say("reading the runs' Ray jobs")
                dispatch = [dispatch_of(client, watcher, run_id, t) for run_id, t in zip(run_ids, times, strict=True)]
                poll_seconds = watcher.polls
    load_after = load_average()

    n = len(times)
    claimed_once = sum(1 for t in times if t.claims == 1)
    succeeded = sum(1 for t in times if t.status == "succeeded")
    claim_times = sorted(t.claimed for t in times if t.claimed is not None)
    start_times = sorted(t.started for t in times if t.started is not None)
    end_times = [t.ended for t in times if t.ended is not None]
    first_claim = claim_times[0]
    span = start_times[-1] - first_claim
    rate = len(start_times) / span if span > 0 else float("inf")
    slots = min(n, args.runners * args.concurrency)
    burst_span = start_times[slots - 1] - first_claim if len(start_times) >= slots else float("nan")
    burst_rate = slots / burst_span if burst_span > 0 else float("inf")
    all_done = max(end_times) - committed_at if end_times else float("nan")
    start_latency = statistics.median(
        t.started - t.claimed for t in times if t.started is not None and t.claimed is not None
    )
    shares = Counter(t.runner_id for t in times)
    rate_ok = rate >= TARGET_RATE or ray  # the target is the local backend's
    once_ok = claimed_once == n
    all_ok = succeeded == n
    passed = rate_ok and once_ok and all_ok

    print()
    print(
        f"ML Ledger claim throughput: {args.runners} `python -m service runner --concurrency {args.concurrency} "
        f"--device cpu{' --backend ray' if ray else ''}` "
        f"processes through the ledger API ({args.api_workers} `serve` processes), "
        f"{n} requested runs (sklearn LogisticRegression on 50 rows x 3 features), one "
        f"{'SQLite file' if args.sqlite else 'PostgreSQL schema'}"
    )
    print(f"warm-up (not counted): {warm_runs} runs in {warm_seconds:.1f} s, so every runner had captured once")
    header = f"{'measure':<58} | {'value':>12} | {'target':>8} | result"
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, str, str, str]] = [
        ("request (one transaction) committed", f"{committed_at - requested_at:.3f} s", "", ""),
        ("first Claimed -> last EnvironmentCaptured", f"{span:.2f} s", "", ""),
        (
            "runs claimed and started per second",
            f"{rate:.1f}/s",
            "" if ray else f">= {TARGET_RATE:g}/s",
            "" if ray else "PASS" if rate_ok else "FAIL",
        ),
        (f"  first {slots} runs (every slot free: claiming alone)", f"{burst_rate:.1f}/s", "", ""),
        ("median Claimed -> EnvironmentCaptured of a run", f"{start_latency * 1000:.0f} ms", "", ""),
        ("request -> first Claimed", f"{first_claim - committed_at:.2f} s", "", ""),
        ("request -> all runs succeeded", f"{all_done:.2f} s", "", ""),
        ("runs claimed exactly once", f"{claimed_once}/{n}", f"{n}/{n}", "PASS" if once_ok else "FAIL"),
        ("runs succeeded", f"{succeeded}/{n}", f"{n}/{n}", "PASS" if all_ok else "FAIL"),
    ]
    for measure, value, target, result in rows:
        print(f"{measure:<58} | {value:>12} | {target:>8} | {result}")
    print("-" * len(header))
    if ray:
        print_dispatch(dispatch, poll_seconds, args.ray_poll, ray_where)
    share_text = ", ".join(f"{runner_id}: {shares.get(runner_id, 0)}" for runner_id in ids)
    print(f"runs per runner: {share_text}")
    print(f"overall: {'PASS' if passed else 'FAIL'}")
    print(machine_line(database))
    print(
        f"load average (1/5/15 min): {load_before} before, {load_during} at the end of the measured runs, "
        f"{load_after} after"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
