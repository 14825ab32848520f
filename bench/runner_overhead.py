"""Benchmark: wall-time overhead of a governed run over the same scikit-learn fit run bare.

A *governed* run goes the whole way: the benchmark requests it
(``Ledger.start_run``), a real runner process (``python -m service runner
--concurrency 1 --device cpu``, started once and warmed up with one tiny run
beforehand, as a long-lived runner would be) claims it, captures the
environment, hands the run to one of its worker processes, which fits the pipeline (the sklearn kind: CSV read
with the standard library, seeded 80/20 stratified split, fit, validation
scores, pickled model, predictions), then records metrics, artifacts and
``Finished``. Its time is from just before the request to the ``recorded_at`` of
the run's ``Finished`` event (so the benchmark's own polling adds nothing).
With ``--backend ray`` a second table splits each governed run further, from
the job's own ``MLLEDGER-PHASES`` log line and the Jobs API: ``submit`` =
Claimed -> the cluster accepted the job, ``dispatch`` = -> the job's process
started, the job's steps (``start``: interpreter and imports, ``download``,
``capture``, ``child``: from the capture to the execution child's end (the
child starts with the job, so its interpreter and imports overlap the
download and the capture), ``upload``), and ``notice`` = the job's outcome -> ``Finished``
(the runner's poll, reading the log, recording).
With ``--in-process`` the runner is a ``Runner`` thread in this process instead
(which has imported scikit-learn for the calibration, so its forked workers
do not import it again).

The *bare* run is the same fit in one plain process (a child of this script,
timed inside it, interpreter start and imports excluded; it also reports
how long importing scikit-learn took, which a fresh Ray job pays too, and
the CPU seconds of that import and the work): load the same CSV
with ``numpy.loadtxt``, the same seeded stratified split, the same
``GradientBoostingClassifier`` with the same parameters and ``random_state``, and
validation predictions. Both report the validation accuracy, which must agree.

The dataset size is calibrated first so that the bare fit takes about
``--fit-seconds`` (default 10 s) on this machine: two quick fits, a straight
line through them. Then ``--repeats`` (default 3) pairs are timed, alternating
which goes first, and the median governed/bare ratio is checked against the
target (<= 1.10; <= 1.15 with ``--backend ray``, where the governed run is a
Ray job, dispatch included). ``--backend ray --ray-address HOST:PORT`` uses that
cluster (its token in ``RAY_AUTH_TOKEN``); without ``--ray-address`` the
benchmark starts a single-node Ray head on 127.0.0.1 (free ports, token auth,
``--num-cpus`` logical CPUs, default 4) and stops it at the end (also on
failure or Ctrl-C).

By default the ledger is the PostgreSQL at ``--database-url`` in a fresh schema
``bench_<random>``, dropped at the end (also on failure or Ctrl-C); with
``--sqlite`` it is a SQLite file in a temporary directory.

Run from the repository root::

    .venv/bin/python bench/runner_overhead.py
    .venv/bin/python bench/runner_overhead.py --sqlite --repeats 5
    .venv/bin/python bench/runner_overhead.py --rows 20000      # skip the calibration
    .venv/bin/python bench/runner_overhead.py --in-process
    .venv/bin/python bench/runner_overhead.py --backend ray     # on a Ray head of its own

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
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
    say,
)
from bench.ray_head import jobs_client, ray_head, runner_ray_args, runner_ray_env
from bench.runner_api import ledger_api, runner_env, runner_principal
from domain.run import Run
from service.bootstrap import Services

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.10
TARGET_RATIO_RAY = 1.15
ESTIMATOR = "sklearn.ensemble.GradientBoostingClassifier"
VALIDATION = 0.2  # the sklearn kind's default validation_split
ACTOR = "user:bench"


# -- data and the bare fit ----------------------------------------------------


def generate(rows: int, features: int) -> tuple[Any, Any]:
    """A learnable binary classification problem (always the same for the same size)."""
    from sklearn.datasets import make_classification

    return make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=max(2, features // 2),
        n_redundant=features // 4,
        flip_y=0.05,
        random_state=0,
    )


def feature_names(features: int) -> list[str]:
    """Column names of the features."""
    return [f"f{j}" for j in range(features)]


def write_csv(path: Path, rows: int, features: int) -> None:
    """The dataset as CSV: the features with 6 decimals, then the integer label."""
    import numpy as np

    X, y = generate(rows, features)
    table = np.column_stack([X, y])
    header = ",".join([*feature_names(features), "label"])
    np.savetxt(path, table, fmt=["%.6f"] * features + ["%d"], delimiter=",", header=header, comments="")


def estimator_params(estimators: int, depth: int) -> dict[str, Any]:
    """The estimator parameters both runs use (random_state is the run's seed)."""
    return {"n_estimators": estimators, "max_depth": depth}


def bare_fit(csv_path: Path, seed: int, estimators: int, depth: int) -> dict[str, float]:
    """The fit as a plain script would do it; seconds of each step and the validation accuracy.

    ``imports``: seconds importing scikit-learn (NumPy is already loaded by this module's own imports),
    which a plain script pays as well, as a Ray job's fresh interpreter does; ``cpu``: CPU seconds of
    those imports and the work.
    """
    before = time.perf_counter()
    cpu_before = time.process_time()
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    X, y = table[:, :-1], table[:, -1].astype(np.int64)
    rows = np.arange(len(y), dtype=np.int64)
    train, validation = train_test_split(rows, test_size=VALIDATION, random_state=seed, stratify=y)
    train, validation = np.sort(train), np.sort(validation)
    loaded = time.perf_counter()
    model = GradientBoostingClassifier(**estimator_params(estimators, depth), random_state=seed)
    model.fit(X[train], y[train])
    fitted = time.perf_counter()
    predicted = model.predict(X[validation])
    model.predict_proba(X[validation])
    accuracy = float((predicted == y[validation]).mean())
    done = time.perf_counter()
    return {
        "imports": started - before,
        "load": loaded - started,
        "fit": fitted - loaded,
        "predict": done - fitted,
        "total": done - started,
        "accuracy": accuracy,
        "cpu": time.process_time() - cpu_before,
    }


def run_bare(csv_path: Path, seed: int, estimators: int, depth: int) -> dict[str, float]:
    """``bare_fit`` in a fresh process of its own (timed inside it)."""
    answer = subprocess.run(
        [
            sys.executable,
            __file__,
            "--bare-fit",
            str(csv_path),
            "--seed",
            str(seed),
            "--estimators",
            str(estimators),
            "--max-depth",
            str(depth),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if answer.returncode != 0:
        raise SystemExit(f"the bare fit failed:\n{answer.stderr[-2000:]}")
    result: dict[str, float] = json.loads(answer.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Calibration:
    """Two timed fits and the row count they predict for the wanted fit time."""

    points: list[tuple[int, float]]
    rows: int
    predicted: float


def calibrate(features: int, estimators: int, depth: int, seed: int, wanted: float) -> Calibration:
    """Fit on two training sizes; a line through them gives the rows for ``wanted`` seconds."""
    from sklearn.ensemble import GradientBoostingClassifier

    points: list[tuple[int, float]] = []
    for train_rows in (2_000, 6_000):
        X, y = generate(train_rows, features)
        started = time.perf_counter()
        GradientBoostingClassifier(**estimator_params(estimators, depth), random_state=seed).fit(X, y)
        points.append((train_rows, time.perf_counter() - started))
        say(f"  calibration: {train_rows:,} training rows fit in {points[-1][1]:.2f} s")
    (n1, t1), (n2, t2) = points
    slope = max((t2 - t1) / (n2 - n1), 1e-6)
    train_rows = max(2_000, int((wanted - (t1 - slope * n1)) / slope))
    rows = min(2_000_000, int(train_rows / (1 - VALIDATION)))
    predicted = t1 + slope * (rows * (1 - VALIDATION) - n1)
    return Calibration(points, rows, predicted)


# -- the governed run ---------------------------------------------------------


@contextlib.contextmanager
def runner_process(
    services: Services,
    log_dir: Path,
    backend: str = "local",
    ray_address: str | None = None,
    ray_token: str | None = None,
    device: str = "cpu",
) -> Iterator[str]:
    """The ledger API and a ``python -m service runner --concurrency 1 --device DEVICE [--backend ray]``
    process that reaches it as a runner principal (no ledger key, no database credentials); with the
    Ray backend, ``ray_token`` (if any) is its ``RAY_AUTH_TOKEN``."""
    command = [sys.executable, "-m", "service", "runner", "--concurrency", "1", "--device", device]
    if backend == "ray":
        command += runner_ray_args(str(ray_address))
    log_path = log_dir / "runner.log"
    with ledger_api(services, log_dir / "api.log") as url:
        env = runner_env(url, runner_principal(services), log_dir / "runner.pem")
        if backend == "ray":
            env |= runner_ray_env(ray_token)
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "runner " not in log_path.read_text(errors="replace"):
                if process.poll() is not None:
                    raise SystemExit(f"the runner exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise SystemExit("the runner did not start within 120 s")
                time.sleep(0.1)
            yield f"`{' '.join(command[1:])}` process (pid {process.pid}) through the ledger API"
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def runner_thread(services: Services) -> Iterator[str]:
    """An in-process ``Runner`` (concurrency 1, cpu, default poll interval) serving in a thread."""
    from service.runners.runner import Runner

    runner = Runner(
        services,
        device="cpu",
        concurrency=1,
        heartbeat_interval=services.settings.heartbeat_seconds,
        heartbeat_timeout=services.settings.heartbeat_timeout_seconds,
        say=lambda _m: None,
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="bench-runner", daemon=True)
    thread.start()
    try:
        yield "in-process Runner thread (concurrency 1, cpu)"
    finally:
        stop.set()
        thread.join(timeout=60)


def register_dataset(services: Services, name: str, data: bytes) -> str:
    """Store the CSV and register it as a dataset version; return its id."""
    blob = services.blobs.put_bytes(data)
    return services.ledger.register_dataset_version(
        name=name,
        digest=blob.digest,
        size=blob.size,
        format="csv",
        schema=[],
        row_count=0,
        datasheet={},
        source="bench",
        actor=ACTOR,
    ).id


def add_pipeline(services: Services, name: str, estimator: str, features: list[str], params: dict[str, Any]) -> str:
    """Record an sklearn pipeline spec; return its name."""
    services.ledger.add_pipeline_spec(
        name=name,
        kind="sklearn",
        spec={
            "estimator": estimator,
            "features": features,
            "target": "label",
            "task": "classification",
            "estimator_params": params,
        },
        actor=ACTOR,
    )
    return name


@dataclass
class Governed:
    """One governed run: its wall time and where it went (from the run's own events)."""

    total: float
    queued: float  # request -> Claimed
    capture: float  # Claimed -> EnvironmentCaptured
    execute: float  # EnvironmentCaptured -> first recorded result (child + reaping)
    record: float  # first recorded result -> Finished
    status: str
    accuracy: float | None
    job: dict[str, float] | None = None  # with --backend ray: submit, dispatch, the job's steps, notice


PHASES_MARK = "MLLEDGER-PHASES "
JOB_STEPS = ("start", "download", "capture", "child", "upload")


def job_phases(jobs: Any, run_id: str, claimed: float, ended: float) -> dict[str, float] | None:
    """Where a run's Ray job spent its time: from the job's MLLEDGER-PHASES line and the Jobs API; None if unknown."""
    try:
        text = str(jobs.get_job_logs(run_id))
        accepted_ms = jobs.get_job_info(run_id).start_time
    except Exception:
        return None
    line = next((x for x in reversed(text.splitlines()) if x.startswith(PHASES_MARK)), None)
    if line is None or accepted_ms is None:
        return None
    phases: dict[str, float] = json.loads(line[len(PHASES_MARK) :])
    accepted, began = accepted_ms / 1000.0, phases["started_at"]
    return {
        "submit": accepted - claimed,
        "dispatch": began - accepted,
        **{step: phases.get(step, 0.0) for step in JOB_STEPS},
        "ready": phases.get("ready", float("nan")),
        "asked": sum(phases.get(step, 0.0) for step in ("start", "download", "capture")),
        "job": phases["total"],
        "notice": ended - (began + phases["total"]),
        "cpu_job": phases.get("cpu_job", 0.0),
        "cpu_child": phases.get("cpu_child", 0.0),
    }


def request_run(
    services: Services, pipeline: str, dataset_id: str, seed: int, params: dict[str, Any] | None = None
) -> str:
    """Request a run of ``pipeline`` for runners, on the device the runner finds best (``auto``); its id."""
    return services.ledger.start_run(
        name=pipeline,
        mode="runner",
        pipeline=pipeline,
        pipeline_version=None,
        dataset_version_ids=[dataset_id],
        code_version_id=None,
        params=params or {},
        seed=seed,
        device="auto",
        actor=ACTOR,
    ).id


def run_governed(
    services: Services, pipeline: str, dataset_id: str, seed: int, timeout: float, jobs: Any = None
) -> Governed:
    """Request a run and wait until it ended; time it from the request to its Finished event."""
    ledger = services.ledger
    started = time.time()
    run_id = request_run(services, pipeline, dataset_id, seed)
    deadline = time.monotonic() + timeout
    while not ledger.get(run_id, Run).finished:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish within {timeout:.0f} s")
        time.sleep(0.1)
    events = list(ledger.events.get(uuid.UUID(run_id)))  # a str id finds nothing on SQLite

    def first(kind: type[Any]) -> float:
        return next(e.timestamp.timestamp() for e in events if isinstance(e, kind))

    finished = next((e for e in events if isinstance(e, Run.Finished)), None)
    if finished is None or finished.status != "succeeded":
        why = f"{finished.status}: {finished.error}" if finished is not None else ledger.get(run_id, Run).status
        raise SystemExit(f"run {run_id} did not succeed ({why})")
    claimed, captured, ended = first(Run.Claimed), first(Run.EnvironmentCaptured), finished.timestamp.timestamp()
    after = [e.timestamp.timestamp() for e in events if isinstance(e, (Run.MetricsLogged, Run.ArtifactRecorded))]
    results = min(after) if after else ended
    accuracy = next(
        (m["value"] for e in events if isinstance(e, Run.MetricsLogged) for m in e.metrics if m["key"] == "accuracy"),
        None,
    )
    return Governed(
        ended - started,
        claimed - started,
        captured - claimed,
        results - captured,
        ended - results,
        finished.status,
        accuracy,
        None if jobs is None else job_phases(jobs, run_id, claimed, ended),
    )


def print_job_phases(pairs: list[tuple[str, dict[str, float], Governed]]) -> None:
    """The Ray split of each governed run (seconds), and the medians."""
    columns = ("submit", "dispatch", *JOB_STEPS, "job", "notice", "asked", "ready", "cpu_job", "cpu_child", "cpu_bare")
    print(
        "Ray job split (s): submit = Claimed -> job accepted, dispatch = -> job process started, "
        "start = its interpreter + imports, child = the execution child (interpreter, imports, load, fit, "
        "predict, write), notice = job's outcome -> Finished; asked = when the job had the request ready "
        "(start + download + capture) and ready = when its execution child had finished its imports, both from "
        "the job process's start (the later of the two is when the fit could begin); "
        "CPU seconds: cpu_job = the job's own process "
        "(imports, capture, transfers), cpu_child = its execution child, cpu_bare = the bare fit of the same "
        "repeat (its scikit-learn import included)"
    )
    header = f"{'#':>2} | " + " | ".join(f"{c:>8}" for c in columns)
    print(header)
    print("-" * len(header))
    known = [g.job | {"cpu_bare": b["cpu"]} for _, b, g in pairs if g.job is not None]
    for index, (_, bare, governed) in enumerate(pairs, start=1):
        if governed.job is None:
            print(f"{index:>2} | (the job's phases could not be read)")
            continue
        row = governed.job | {"cpu_bare": bare["cpu"]}
        print(f"{index:>2} | " + " | ".join(f"{row[c]:>8.2f}" for c in columns))
    if known:
        print(" m | " + " | ".join(f"{statistics.median(j[c] for j in known):>8.2f}" for c in columns))


# -- main ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--in-process", action="store_true", help="a Runner thread here instead of a runner process")
    parser.add_argument("--backend", choices=["local", "ray"], default="local", help="the runner's backend")
    parser.add_argument(
        "--ray-address", default=None, help="the Ray Jobs API (host:port) for --backend ray (default: start a head)"
    )
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the Ray head it starts (default 4)")
    parser.add_argument("--fit-seconds", type=float, default=10.0, help="wanted bare fit time (default 10)")
    parser.add_argument("--rows", type=int, default=None, help="dataset rows (skips the calibration)")
    parser.add_argument("--features", type=int, default=20, help="feature columns (default 20)")
    parser.add_argument("--estimators", type=int, default=100, help="n_estimators (default 100)")
    parser.add_argument("--max-depth", type=int, default=3, help="max_depth (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="the run's seed = random_state (default 7)")
    parser.add_argument("--repeats", type=int, default=3, help="governed/bare pairs (default 3)")
    parser.add_argument("--bare-fit", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.bare_fit is not None:  # the bare child
        print(json.dumps(bare_fit(args.bare_fit, args.seed, args.estimators, args.max_depth)))
        return 0

    install_sigterm_handler()
    load_before = load_average()
    params = estimator_params(args.estimators, args.max_depth)
    calibration = None
    if args.rows is None:
        say(
            f"calibrating: GradientBoostingClassifier({params}) on {args.features} features, "
            f"wanted bare fit {args.fit_seconds:g} s"
        )
        calibration = calibrate(args.features, args.estimators, args.max_depth, args.seed, args.fit_seconds)
        rows = calibration.rows
    else:
        rows = args.rows

    ray = args.backend == "ray" and not args.in_process
    ray_address, ray_token = args.ray_address, os.environ.get("RAY_AUTH_TOKEN")
    with contextlib.ExitStack() as stack:
        if ray and not ray_address:
            cluster = stack.enter_context(ray_head(args.num_cpus))  # before the data, so stopped after it
            ray_address, ray_token = cluster.address, cluster.token
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlledger-overhead-"))
        settings = stack.enter_context(fresh_settings(args.database_url, args.sqlite))
        csv_path = Path(tmp) / "train.csv"
        write_csv(csv_path, rows, args.features)
        tiny_path = Path(tmp) / "tiny.csv"
        write_csv(tiny_path, 60, 3)
        mib = csv_path.stat().st_size / 2**20
        say(f"dataset: {rows:,} rows x {args.features} features ({mib:.1f} MiB CSV)")
        database = describe_database(settings)
        with opened(settings) as services:
            dataset_id = register_dataset(services, "overhead", csv_path.read_bytes())
            tiny_id = register_dataset(services, "tiny", tiny_path.read_bytes())
            pipeline = add_pipeline(services, "gbm", ESTIMATOR, feature_names(args.features), params)
            warm = add_pipeline(services, "warm-up", "sklearn.linear_model.LogisticRegression", feature_names(3), {})
            runner = (
                runner_thread(services)
                if args.in_process
                else runner_process(services, Path(tmp), args.backend, ray_address, ray_token)
            )
            jobs = jobs_client(str(ray_address), ray_token) if ray else None
            with runner as runner_kind:
                say(f"runner ready: {runner_kind}; warm-up run (first environment capture imports torch)")
                cold = run_governed(services, warm, tiny_id, args.seed, timeout=300)
                say(f"  warm-up run {cold.status} in {cold.total:.2f} s (capture {cold.capture:.2f} s)")
                pairs: list[tuple[str, dict[str, float], Governed]] = []
                for index in range(args.repeats):
                    order = "bare first" if index % 2 == 0 else "governed first"
                    say(f"repeat {index + 1}/{args.repeats} ({order}), load {load_average()}")
                    bare: dict[str, float] = {}
                    governed: Governed | None = None
                    for step in ("bare", "governed") if index % 2 == 0 else ("governed", "bare"):
                        if step == "bare":
                            bare = run_bare(csv_path, args.seed, args.estimators, args.max_depth)
                            say(f"  bare: {bare['total']:.2f} s (fit {bare['fit']:.2f} s)")
                        else:
                            governed = run_governed(services, pipeline, dataset_id, args.seed, 600, jobs)
                            say(f"  governed: {governed.total:.2f} s ({governed.status})")
                    assert governed is not None
                    pairs.append((order, bare, governed))
    load_after = load_average()

    ratios = [g.total / b["total"] for _, b, g in pairs]
    median = statistics.median(ratios)
    all_ok = all(g.status == "succeeded" for _, _, g in pairs)
    same = all(g.accuracy is not None and abs(g.accuracy - b["accuracy"]) < 1e-12 for _, b, g in pairs)
    target = TARGET_RATIO_RAY if ray else TARGET_RATIO
    passed = median <= target and all_ok and same

    how = "in-process Runner thread" if args.in_process else "`python -m service runner` process"
    if ray:
        where = f"the Ray cluster at {args.ray_address}" if args.ray_address else "a Ray head of its own on 127.0.0.1"
        how += f" with --backend ray, each run a Ray job on {where}"
    print()
    print(
        f"ML Ledger runner overhead: governed run (request -> Finished, through a {how}) "
        "vs the same fit bare in one process"
    )
    print(
        f"workload: {ESTIMATOR.rsplit('.', 1)[1]}(n_estimators={args.estimators}, max_depth={args.max_depth}, "
        f"random_state={args.seed}) on {rows:,} rows x {args.features} features ({mib:.1f} MiB CSV), "
        f"{1 - VALIDATION:.0%}/{VALIDATION:.0%} stratified split, validation predict_proba"
    )
    if calibration is not None:
        points = ", ".join(f"{n:,} rows -> {t:.2f} s" for n, t in calibration.points)
        print(
            f"calibration: {points}; {rows:,} rows ({int(rows * (1 - VALIDATION)):,} training) "
            f"predicted {calibration.predicted:.1f} s (wanted {args.fit_seconds:g} s)"
        )
    print(
        f"runner warm-up (first run of the runner, not counted): {cold.total:.2f} s, "
        f"of which environment capture {cold.capture:.2f} s"
    )
    print(
        "governed columns from the run's own events: queued = request -> Claimed, capture = Claimed -> "
        "EnvironmentCaptured, execute = -> first result event (child + reaping), record = -> Finished"
    )
    header = (
        f"{'#':>2} | {'order':<14} | {'bare s':>7} | {'(fit s)':>7} | {'governed s':>10} | {'ratio':>6} | "
        f"{'queued':>6} | {'capture':>7} | {'execute':>7} | {'record':>6} | {'accuracy':>8} | same"
    )
    print(header)
    print("-" * len(header))
    for index, ((order, bare, governed), ratio) in enumerate(zip(pairs, ratios, strict=True), start=1):
        accuracy_same = governed.accuracy is not None and abs(governed.accuracy - bare["accuracy"]) < 1e-12
        print(
            f"{index:>2} | {order:<14} | {bare['total']:>7.2f} | {bare['fit']:>7.2f} | {governed.total:>10.2f} | "
            f"{ratio:>6.3f} | {governed.queued:>6.2f} | {governed.capture:>7.2f} | {governed.execute:>7.2f} | "
            f"{governed.record:>6.2f} | {bare['accuracy']:>8.4f} | {'yes' if accuracy_same else 'NO'}"
        )
    print("-" * len(header))
    whole = statistics.median(g.total / (b["imports"] + b["total"]) for _, b, g in pairs)
    print(
        "bare scikit-learn import s: "
        + ", ".join(f"{b['imports']:.2f}" for _, b, _ in pairs)
        + "; bare CPU s (imports + work): "
        + ", ".join(f"{b['cpu']:.2f}" for _, b, _ in pairs)
        + f"; median governed / (bare imports + bare): {whole:.3f} (for information; the target is on the ratio above)"
    )
    if ray:
        print_job_phases(pairs)
    print(
        f"median ratio governed/bare: {median:.3f} (target <= {target:.2f}); "
        f"all succeeded: {'yes' if all_ok else 'NO'}; same accuracy: {'yes' if same else 'NO'}  "
        f"=> {'PASS' if passed else 'FAIL'}"
    )
    print(machine_line(database))
    print(f"load average (1/5/15 min): {load_before} before, {load_after} after")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
