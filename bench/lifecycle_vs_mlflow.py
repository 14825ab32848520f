"""Benchmark: the same MLflow client script against MLflow's own tracking server
and against ML Ledger's MLflow-compatible API, alternating in one run; target
ML Ledger >= 1.0x MLflow's lifecycles per second, with every ML Ledger call a
signed ledger event.

The lifecycle, one ``MlflowClient`` function run unchanged against both servers
(the stock client, ``mlflow-skinny`` from the project's virtualenv):

1. create a run; log 10 parameters (one ``log_batch``); log 200 metric points,
   one ``log_metric`` call each;
2. upload a 1 MB artifact through the proxied artifact API (``log_artifact``);
   end the run (``set_terminated``);
3. register the artifact as a new version of one registered model
   (``create_model_version``, which waits until the version is READY).

MLflow's side is ``mlflow server`` (full ``mlflow==3.17.2``, installed by this
script on first use into ``~/.cache/mlledger-bench/mlflow-venv``; never a project
dependency) with a SQLite backend store and ``--artifacts-destination`` on local
disk, started as a subprocess on this machine with its default workers (4; ``--mlflow-workers`` changes it).

ML Ledger's side is ``python -m service serve --no-runner`` (``--no-projector``
unless ``--projector``), started as a subprocess on a fresh data directory after
``python -m service migrate``; its ledger is embedded SQLite (or, with
``--database-url postgresql://...``, PostgreSQL in a fresh schema dropped at the
end). The client authenticates with a data scientist's API key
(``MLFLOW_TRACKING_TOKEN``). Every record it writes is an Ed25519-signed,
hash-chained event: the bench reports how many the timed lifecycles wrote (the
ledger position delta) and, after timing, projects the log and runs
``python -m service verify`` over the whole ledger.

Each of ``--rounds`` rounds (default 5) runs ``--lifecycles`` lifecycles (default
4) on each server; which goes first alternates by round. ``--warmup`` untimed
lifecycles per server (default 1) come first. One-time setup (install, server
start, principals, experiment, registered model) is reported separately.

Run from the repository root::

    .venv/bin/python bench/lifecycle_vs_mlflow.py
    .venv/bin/python bench/lifecycle_vs_mlflow.py --rounds 3 --lifecycles 2 --projector

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import describe_database, drop_schema, install_sigterm_handler, percentile, say
from bench.serving_setup import free_port
from mlledger.client import LedgerClient
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.0
PARAMS = 10
METRIC_POINTS = 200
ARTIFACT_BYTES = 1024 * 1024
MODEL_NAME = "bench-model"
EXPERIMENT = "bench-lifecycle"
MLFLOW_SPEC = "mlflow==3.17.2"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlledger-bench"
CLIENT_CALLS = 1 + 1 + METRIC_POINTS + 1 + 1 + 1


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# -- the client script, the same for both servers ------------------------------------------------------
def lifecycle(client: object, experiment_id: str, artifact: Path, number: int) -> str:
    """One lifecycle with the stock ``MlflowClient``; return the registered version."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    assert isinstance(client, MlflowClient)
    run = client.create_run(experiment_id, run_name=f"lifecycle-{number}")
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(f"param_{i:02d}", str(round(0.05 * i, 2))) for i in range(PARAMS)])
    for step in range(METRIC_POINTS):
        client.log_metric(run_id, "loss", round(1.0 / (step + 1), 6), step=step)
    client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id)
    version = client.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/{artifact.name}", run_id=run_id)
    return str(version.version)


def prepare(url: str) -> tuple[object, str]:
    """A client of ``url``, the experiment and the registered model the lifecycles use."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment_id = client.create_experiment(EXPERIMENT)
    client.create_registered_model(MODEL_NAME)
    return client, experiment_id


# -- servers --------------------------------------------------------------------------------------------
def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited ({process.returncode}):\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer in 180 s:\n{tail(log)}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LedgerServer:
    """The real ML Ledger server in a subprocess."""

    workdir: Path
    database_url: str
    projector: bool
    schema: str = field(default_factory=lambda: f"bench_{secrets.token_hex(6)}")
    admin_key: str = field(default_factory=lambda: "mll_" + secrets.token_urlsafe(32))
    setup: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "MLLEDGER_DATA_DIR": str(self.workdir / "ledger-data")}
        env["MLLEDGER_ADMIN_API_KEY"] = self.admin_key
        if self.database_url:
            env["MLLEDGER_DATABASE_URL"] = self.database_url
            env["MLLEDGER_DATABASE_SCHEMA"] = self.schema
        return env

    def cli(self, *args: str) -> str:
        """Run ``python -m service ARGS`` on this ledger; return its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "service", *args], cwd=REPO, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"mlledger {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Migrate, start the server, create a data scientist and its API key."""
        started = time.perf_counter()
        say("ML Ledger: migrating a fresh ledger")
        self.cli("migrate")
        self.setup["migrate"] = time.perf_counter() - started
        started = time.perf_counter()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-runner"]
        if not self.projector:
            command.append("--no-projector")
        say(f"ML Ledger: starting python {' '.join(command[1:])}")
        self.log_path = self.workdir / "ledger-server.log"
        self.log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(f"{self.url}/readyz", self.process, self.log_path, "the ML Ledger server")
        self.setup["server start until /readyz answers"] = time.perf_counter() - started
        admin = LedgerClient(self.url, self.admin_key)
        written = admin.create_principal("scientist", ["data_scientist"])
        self.token = admin.issue_api_key(written.id, label="scientist (bench)")

    def position(self) -> int:
        """The ledger position (notification id of the newest event)."""
        return int(httpx.get(f"{self.url}/readyz", timeout=30).json()["position"])

    def stop(self) -> None:
        stop(self.process)
        with contextlib.suppress(AttributeError):
            self.log.close()

    def describe(self) -> str:
        """Where the ledger lives."""
        if self.database_url:
            settings = Settings(
                data_dir=self.workdir / "ledger-data", database_url=self.database_url, database_schema=self.schema
            )
            return describe_database(settings)
        return f"embedded SQLite {sqlite3.sqlite_version} (WAL)"


def mlflow_venv(cache: Path) -> tuple[Path, float | None]:
    """Full MLflow's virtualenv, installed on first use; return its python and the install seconds (None if cached)."""
    venv = cache / "mlflow-venv"
    python = venv / "bin" / "python"
    version = MLFLOW_SPEC.split("==")[1]
    probe = [str(python), "-c", f"import mlflow.server, sys; sys.exit(mlflow.__version__ != {version!r})"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python, None
    cache.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    log_path = cache / "mlflow-install.log"
    say(f"MLflow: installing {MLFLOW_SPEC} into {venv} (one time; several minutes; log in {log_path})")
    started = time.perf_counter()
    with log_path.open("w") as log:
        for step in (
            [base, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", MLFLOW_SPEC],
        ):
            code = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            if code != 0:
                raise SystemExit(f"installing MLflow failed: {' '.join(step)} exited {code}:\n{tail(log_path)}")
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        raise SystemExit(f"{MLFLOW_SPEC} does not import from {venv} after installing; see {log_path}")
    return python, time.perf_counter() - started


@dataclass
class MlflowServer:
    """``mlflow server`` (SQLite backend store, proxied artifacts on local disk) in a subprocess."""

    python: Path
    workdir: Path
    workers: int | None = None
    setup: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        root = self.workdir / "mlflow"
        root.mkdir()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            str(self.python.parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *(["--workers", str(self.workers)] if self.workers else []),
        ]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        say(f"MLflow: starting {' '.join(command[1:])}")
        started = time.perf_counter()
        self.log_path = self.workdir / "mlflow-server.log"
        self.log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(f"{self.url}/health", self.process, self.log_path, "the MLflow server")
        self.setup["server start until /health answers"] = time.perf_counter() - started

    def stop(self) -> None:
        stop(self.process)
        with contextlib.suppress(AttributeError):
            self.log.close()


# -- the run --------------------------------------------------------------------------------------------
@dataclass
class Timings:
    """Per-lifecycle seconds of one server."""

    system: str
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.seconds) / sum(self.seconds) if self.seconds else 0.0

    def row(self) -> str:
        s = self.seconds
        return (
            f"{self.system:<10} | {len(s):>10} | {sum(s):>9.2f} | {statistics.median(s):>10.3f} | "
            f"{percentile(s, 0.95):>7.3f} | {self.rate:>12.2f}"
        )


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    """A temporary directory for both servers' data, removed at the end unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="mlledger-lifecycle-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def load() -> str:
    """``uptime``'s load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--lifecycles", type=int, default=4, help="lifecycles per server per round (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed lifecycles per server first (default 1)")
    parser.add_argument("--database-url", default="", help="ML Ledger on this PostgreSQL (default: embedded SQLite)")
    parser.add_argument("--projector", action="store_true", help="run the projector inside the ML Ledger server")
    parser.add_argument(
        "--mlflow-workers", type=int, default=None, help="mlflow server --workers (default: MLflow's own, 4)"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--no-verify", action="store_true", help="skip 'mlledger verify' after timing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.lifecycles < 1 or args.warmup < 0:
        parser.error("--rounds and --lifecycles must be at least 1, --warmup at least 0")
    install_sigterm_handler()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    python, install_seconds = mlflow_venv(args.cache_dir)
    with workspace(args.keep) as work:
        artifact = work / "weights.bin"
        artifact.write_bytes(os.urandom(ARTIFACT_BYTES))
        ledger = LedgerServer(work, args.database_url, args.projector)
        mlflow = MlflowServer(python, work, args.mlflow_workers)
        try:
            ledger.start()
            mlflow.start()
            # the ledger key is what MLflow's server ignores and ML Ledger requires
            os.environ["MLFLOW_TRACKING_TOKEN"] = ledger.token
            ours, theirs, events, loads = measure(args, ledger, mlflow, artifact)
            verified = ([], 0.0) if args.no_verify else verify(ledger)
            report(args, ledger, mlflow, ours, theirs, events, loads, verified, install_seconds)
        finally:
            mlflow.stop()
            ledger.stop()
            if args.database_url:
                drop_schema(args.database_url, ledger.schema)
                say(f"dropped schema {ledger.schema}")
    return 0


def measure(
    args: argparse.Namespace, ledger: LedgerServer, mlflow: MlflowServer, artifact: Path
) -> tuple[Timings, Timings, int, tuple[str, str]]:
    """Warm up each server, then alternate the timed rounds (which server goes first flips each round)."""
    sides: dict[str, tuple[object, str]] = {"ML Ledger": prepare(ledger.url), "MLflow": prepare(mlflow.url)}
    timings = {name: Timings(name) for name in sides}
    number = 0
    say(f"warm-up: {args.warmup} lifecycle(s) per server")
    for client, experiment_id in sides.values():
        for _ in range(args.warmup):
            lifecycle(client, experiment_id, artifact, number)
            number += 1
    load_before = load()
    events = 0
    for round_index in range(args.rounds):
        order = ["ML Ledger", "MLflow"] if round_index % 2 == 0 else ["MLflow", "ML Ledger"]
        for name in order:
            client, experiment_id = sides[name]
            position: Callable[[], int] = ledger.position if name == "ML Ledger" else (lambda: 0)
            before = position()
            for _ in range(args.lifecycles):
                started = time.perf_counter()
                lifecycle(client, experiment_id, artifact, number)
                timings[name].seconds.append(time.perf_counter() - started)
                number += 1
            events += position() - before
        say(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(f"{n} {sum(timings[n].seconds[-args.lifecycles :]):.2f} s" for n in sides)
            + f" for {args.lifecycles} lifecycles each (load {load()})"
        )
    return timings["ML Ledger"], timings["MLflow"], events, (load_before, load())


def verify(ledger: LedgerServer) -> tuple[list[str], float]:
    """Stop the server, project the log and verify the whole ledger; return the summary lines and seconds."""
    say("ML Ledger: stopping the server, projecting the log and running 'python -m service verify'")
    ledger.stop()
    started = time.perf_counter()
    ledger.cli("project")
    lines = [line for line in ledger.cli("verify").splitlines() if line.startswith(("OK", "FAILED", "transparency"))]
    return lines, time.perf_counter() - started


def report(
    args: argparse.Namespace,
    ledger: LedgerServer,
    mlflow: MlflowServer,
    ours: Timings,
    theirs: Timings,
    events: int,
    loads: tuple[str, str],
    verified: tuple[list[str], float],
    install_seconds: float | None,
) -> None:
    """Print the results table and the context a reader needs to trust it."""
    ratio = ours.rate / theirs.rate if theirs.rate else float("inf")
    projector = "with the projector in-process" if args.projector else "--no-projector"
    print()
    print(
        f"One lifecycle, the same MlflowClient code on both sides: create run, {PARAMS} params (log_batch), "
        f"{METRIC_POINTS} log_metric calls, a {ARTIFACT_BYTES // 1024} KiB artifact (proxied upload), end run, "
        f"register a model version ({CLIENT_CALLS} client calls, plus the client's own look-ups)"
    )
    print(f"{args.rounds} alternating rounds x {args.lifecycles} lifecycles per server, after {args.warmup} warm-up")
    print(f"ML Ledger: python -m service serve --no-runner ({projector}), {ledger.describe()}, MLflow API")
    workers = f"--workers {args.mlflow_workers}" if args.mlflow_workers else "its default 4 workers"
    print(
        f"MLflow {MLFLOW_SPEC.split('==')[1]}: mlflow server ({workers}), SQLite backend store, proxied local artifacts"
    )
    print()
    header = (
        f"{'server':<10} | {'lifecycles':>10} | {'total s':>9} | {'median s/lc':>10} | {'p95 s':>7} | "
        f"{'lifecycles/s':>12}"
    )
    print(header)
    print("-" * len(header))
    print(ours.row())
    print(theirs.row())
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ML Ledger / MLflow lifecycles per second: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x): {verdict}")
    print(
        f"signed events written by the timed ML Ledger lifecycles: {events:,} (ledger position delta; "
        f"{events / len(ours.seconds):.0f} per lifecycle, each Ed25519-signed and hash-chained)"
    )
    lines, seconds = verified
    if lines:
        print(f"after timing, 'mlledger project' + 'mlledger verify' over the whole ledger ({seconds:.1f} s):")
        for line in lines:
            print(f"  {line}")
    print()
    print("one-time setup, not timed:")
    install = "already installed (cached)" if install_seconds is None else f"{install_seconds:.1f} s"
    print(f"  MLflow virtualenv ({args.cache_dir / 'mlflow-venv'}): {install}")
    for label, value in mlflow.setup.items():
        print(f"  MLflow {label}: {value:.2f} s")
    for label, value in ledger.setup.items():
        print(f"  ML Ledger {label}: {value:.2f} s")
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}; load average (1, 5, 15 min) {loads[0]} before the rounds, {loads[1]} after"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
