"""Benchmark: one governed ML lifecycle on ML Ledger against the same lifecycle on
MLflow 3, measured alternately in one run; target ML Ledger >= 10x MLflow's
lifecycles per second.

The lifecycle, the same on both sides:

1. start a run; log 20 parameters (one call); log 200 metric points, one call each;
2. log the model: a scikit-learn LogisticRegression trained on iris, pickled
   (trained once, before timing; both sides log the same bytes); end the run;
3. register it as a new version of one registered model;
4. approve it: on ML Ledger two approvals, each a statement signed on the client
   with the approver's own Ed25519 key (registered with the ledger) by two
   approver principals; on MLflow a model-version tag ``approval=approved``;
5. point the champion at it: on ML Ledger the deployment action ``champion`` by
   an operator (refused unless the version is approved); on MLflow the
   registered-model alias ``champion``.

ML Ledger is the real server, ``python -m service serve --no-projector`` (or with
the projector, ``--projector``), started as a subprocess on a fresh data
directory after ``python -m service migrate``, and reached over real HTTP on
127.0.0.1 with ``mlledger.client.LedgerClient`` (210 HTTP calls a lifecycle). Its
ledger is embedded SQLite by default; with ``--database-url postgresql://...`` it
is PostgreSQL in a fresh schema ``bench_<random>`` that is dropped at the end.
Every record it writes is an Ed25519-signed, hash-chained event: the bench
reports how many the timed lifecycles wrote (the ledger position delta) and, after
timing, projects the log and runs ``python -m service verify`` over the whole
ledger.

MLflow is installed by this script, on first use, into its own virtualenv
(``~/.cache/mlledger-bench/mlflow-venv``: ``pip install "mlflow>=3,<4"
scikit-learn``, which takes a few minutes; it is never a project dependency). A
worker in that virtualenv runs MLflow's fastest local mode for this: the
``MlflowClient`` API in-process (no tracking server, no HTTP) on a SQLite
backend store ``sqlite:///<tmp>/mlflow.db`` with a local artifact root (or, with
``--mlflow-store file``, the deprecated file store). It stays up for the whole run,
takes a number of lifecycles on stdin and answers with their seconds as JSON.

Each of ``--rounds`` rounds (default 5) runs ``--lifecycles`` lifecycles
(default 3) on each system; which system goes first alternates by round. One
warm-up lifecycle per system precedes the rounds. Timings exclude one-time setup
(MLflow install, imports, database creation, server start, principals), which is
reported separately.

Run from the repository root::

    .venv/bin/python bench/lifecycle_vs_mlflow.py
    .venv/bin/python bench/lifecycle_vs_mlflow.py --rounds 3 --lifecycles 2
    .venv/bin/python bench/lifecycle_vs_mlflow.py --database-url postgresql://postgres@127.0.0.1:5432/test

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import describe_database, drop_schema, install_sigterm_handler, percentile, say
from bench.serving_setup import free_port
from domain.integrity.keys import Signer
from mlledger.client import ChangePending, LedgerClient
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 10.0
PARAMS = 20
METRIC_POINTS = 200
MODEL_NAME = "iris-classifier"
MLFLOW_SPEC = "mlflow>=3,<4"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlledger-bench"
WORKER_TAG = "@@bench "


def bench_params() -> dict[str, Any]:
    """The 20 parameters both sides log (MLflow stores them as strings)."""
    return {f"param_{index:02d}": round(0.05 * index, 2) for index in range(PARAMS)}


def metric_value(step: int) -> float:
    """A decreasing loss curve."""
    return round(1.0 / (step + 1), 6)


def train_model() -> bytes:
    """LogisticRegression on iris, pickled: the artifact both sides log."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels))


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# -- ML Ledger ----------------------------------------------------------------


@dataclass
class Approver:
    """An approver principal with its client and registered signing key."""

    id: str
    client: LedgerClient
    signer: Signer
    key_id: str


@dataclass
class LedgerSide:
    """The real ML Ledger server in a subprocess, driven over HTTP."""

    workdir: Path
    database_url: str
    projector: bool
    buffered: bool = False
    schema: str = field(default_factory=lambda: f"bench_{secrets.token_hex(6)}")
    admin_key: str = field(default_factory=lambda: "mll_" + secrets.token_urlsafe(32))
    setup: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    approvers: list[Approver] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "MLLEDGER_DATA_DIR": str(self.workdir / "ledger-data"),
            "MLLEDGER_ADMIN_API_KEY": self.admin_key,
        }
        if self.database_url:
            env["MLLEDGER_DATABASE_URL"] = self.database_url
            env["MLLEDGER_DATABASE_SCHEMA"] = self.schema
        return env

    def cli(self, *args: str) -> str:
        """Run ``python -m service ARGS`` on this ledger; return its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "service", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"mlledger {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Migrate, start the server, create the principals."""
        started = time.perf_counter()
        say("ML Ledger: migrating a fresh ledger")
        self.cli("migrate")
        self.setup["migrate (python -m service migrate)"] = time.perf_counter() - started

        started = time.perf_counter()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not self.projector:
            command.append("--no-projector")
        say(f"ML Ledger: starting python {' '.join(command[1:])}")
        self.log_path = self.workdir / "server.log"
        self.log: IO[bytes] = self.log_path.open("wb")
        self.server = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.base_url, timeout=60.0, event_hooks={"request": [self._count]})
        deadline = time.monotonic() + 120
        while True:
            if self.server.poll() is not None:
                raise SystemExit(f"the ML Ledger server exited ({self.server.returncode}):\n{tail(self.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the ML Ledger server did not become ready in 120 s:\n{tail(self.log_path)}")
            time.sleep(0.05)
        self.setup["server start until /readyz answers"] = time.perf_counter() - started

        started = time.perf_counter()
        admin = LedgerClient(api_key=self.admin_key, http=self.http)
        self.scientist = self._person(admin, "scientist", ["data_scientist"])[1]
        self.operator = self._person(admin, "operator", ["operator"])[1]
        second_id, second = self._person(admin, "admin-2", [])
        people = [self._person(admin, name, []) for name in ("approver-1", "approver-2")]
        admin.grant_role(second_id, "admin")  # closes the bootstrap: privileged grants need two admins now
        for principal_id, client in people:
            try:
                admin.grant_role(principal_id, "approver", reason="benchmark approver")
            except ChangePending as pending:
                second.confirm_change(pending.change_id)
            signer = Signer.generate()
            self.approvers.append(
                Approver(principal_id, client, signer, client.register_signing_key(principal_id, signer))
            )
        self.setup["4 principals, API keys, 2 signing keys"] = time.perf_counter() - started

    def _count(self, _request: httpx.Request) -> None:
        self.requests += 1

    def _person(self, admin: LedgerClient, name: str, roles: list[str]) -> tuple[str, LedgerClient]:
        written = admin.create_principal(name, roles)
        token = admin.issue_api_key(written.id, label=f"{name} (bench)")
        return written.id, LedgerClient(api_key=token, http=self.http)

    def position(self) -> int:
        """The ledger position (notification id of the newest event)."""
        return int(self.http.get("/readyz").json()["position"])

    def lifecycle(self, number: int, model: bytes, params: dict[str, Any]) -> int:
        """One lifecycle through the HTTP API; return the model version it deployed."""
        client = self.scientist
        run = client.start_run(name=f"iris-{number}")
        client.log_params(run.id, params)
        if self.buffered:
            with client.metric_logger(run.id) as metrics:
                for step in range(METRIC_POINTS):
                    metrics.log("loss", metric_value(step), step)
        else:
            for step in range(METRIC_POINTS):
                client.log_metric(run.id, "loss", metric_value(step), step)
        client.upload_artifact(run.id, "model.pkl", model)
        client.finish_run(run.id)
        version, _ = client.register_model_version(MODEL_NAME, run.id, "model.pkl")
        for approver in self.approvers:
            approver.client.decide(
                MODEL_NAME,
                version,
                approver.signer,
                approver.key_id,
                "approve",
                "bench: reviewed",
                approver_id=approver.id,
            )
        self.operator.deploy(MODEL_NAME, "champion", version, reason="bench")
        return version

    def champion(self) -> int | None:
        """The version the deployment names champion now."""
        champion = self.operator.deployment(MODEL_NAME)["champion"]
        return int(champion) if champion is not None else None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        with contextlib.suppress(AttributeError):
            self.http.close()
            self.log.close()

    def describe(self) -> str:
        """Where the ledger lives."""
        if self.database_url:
            return describe_database(
                Settings(
                    data_dir=self.workdir / "ledger-data", database_url=self.database_url, database_schema=self.schema
                )
            )
        return f"SQLite {sqlite3.sqlite_version} (WAL) in a temp dir"


# -- MLflow -------------------------------------------------------------------

WORKER = r'''
"""The MLflow side of bench/lifecycle_vs_mlflow.py; runs in MLflow's own virtualenv."""
import json
import sqlite3
import sys
import time

started = time.perf_counter()
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param

import_seconds = time.perf_counter() - started
TAG = "@@bench "


def say(**fields):
    print(TAG + json.dumps(fields), flush=True)


def main():
    config = json.loads(sys.argv[1])
    model = config["model_name"]
    started = time.perf_counter()
    client = MlflowClient(tracking_uri=config["tracking_uri"], registry_uri=config["registry_uri"])
    experiment = client.create_experiment("lifecycle-bench", artifact_location=config["artifact_uri"])
    client.create_registered_model(model)
    setup_seconds = time.perf_counter() - started
    journal = ""
    if config["sqlite_path"]:
        with sqlite3.connect(config["sqlite_path"]) as conn:
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    params = [Param(key, str(value)) for key, value in config["params"].items()]
    calls = 0

    def lifecycle(number):
        nonlocal calls
        run = client.create_run(experiment, run_name=f"iris-{number}")
        run_id = run.info.run_id
        client.log_batch(run_id, params=params)
        for step in range(config["metric_points"]):
            client.log_metric(run_id, "loss", round(1.0 / (step + 1), 6), step=step)
        client.log_artifact(run_id, config["model_file"], artifact_path="model")
        client.set_terminated(run_id)
        version = client.create_model_version(model, source=f"{run.info.artifact_uri}/model", run_id=run_id)
        client.set_model_version_tag(model, version.version, "approval", "approved")
        client.set_registered_model_alias(model, "champion", version.version)
        calls += 7 + config["metric_points"]
        return int(version.version)

    say(event="ready", import_seconds=import_seconds, setup_seconds=setup_seconds,
        mlflow=mlflow.__version__, journal_mode=journal)
    done = 0
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        seconds, calls = [], 0
        for _ in range(int(command)):
            begun = time.perf_counter()
            last = lifecycle(done)
            seconds.append(time.perf_counter() - begun)
            done += 1
        say(event="batch", seconds=seconds, calls=calls, last_version=last)
    champion = client.get_model_version_by_alias(model, "champion")
    say(event="final", champion=int(champion.version), approval=champion.tags.get("approval"),
        lifecycles=done)


main()
'''


def mlflow_venv(cache: Path) -> tuple[Path, float | None]:
    """MLflow 3's virtualenv, installed on first use; return its python and the install seconds (None if cached)."""
    venv = cache / "mlflow-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mlflow, sklearn, sys; sys.exit(0 if mlflow.__version__[0] == '3' else 1)"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python, None
    cache.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    log_path = cache / "mlflow-install.log"
    say(
        f"MLflow: installing {MLFLOW_SPEC} and scikit-learn into {venv} (one time; this can take several minutes, "
        f"log in {log_path})"
    )
    started = time.perf_counter()
    with log_path.open("w") as log:
        steps = [
            [base, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", MLFLOW_SPEC, "scikit-learn"],
        ]
        for step in steps:
            process = subprocess.Popen(step, stdout=log, stderr=subprocess.STDOUT)
            while True:
                try:
                    code = process.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    say(f"  still installing MLflow, {time.perf_counter() - started:.0f} s so far...")
            if code != 0:
                raise SystemExit(
                    f"installing MLflow failed: {' '.join(step)} exited {code}; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        raise SystemExit(f"MLflow 3 does not import from {venv} after installing; see {log_path}")
    return python, time.perf_counter() - started


@dataclass
class MlflowSide:
    """A long-lived worker process in MLflow's virtualenv."""

    python: Path
    workdir: Path
    store: str
    setup: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    process: subprocess.Popen[str] | None = None

    def start(self, model_file: Path) -> None:
        """Start the worker and wait until MLflow has created its store."""
        root = self.workdir / "mlflow"
        root.mkdir()
        sqlite_path = root / "mlflow.db"
        database = f"sqlite:///{sqlite_path}"
        tracking = database if self.store == "sqlite" else (root / "mlruns").as_uri()
        config = {
            "tracking_uri": tracking,
            "registry_uri": database,
            "artifact_uri": (root / "artifacts").as_uri(),
            "sqlite_path": str(sqlite_path),
            "model_name": MODEL_NAME,
            "model_file": str(model_file),
            "params": bench_params(),
            "metric_points": METRIC_POINTS,
        }
        script = self.workdir / "mlflow_worker.py"
        script.write_text(WORKER)
        # No telemetry or version checks from a benchmark; the file store needs an explicit opt-in in MLflow 3.
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_ALLOW_FILE_STORE": "true",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PYTHONPATH", None)
        self.log_path = self.workdir / "mlflow-worker.log"
        self.log = self.log_path.open("w")
        say(f"MLflow: starting the worker ({self.store} store; importing mlflow, creating the store)")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(self.python), str(script), json.dumps(config)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        ready = self._receive("ready")
        self.setup["worker start, import mlflow"] = ready["import_seconds"]
        self.setup["create store, experiment, registered model"] = ready["setup_seconds"]
        self.setup["worker start-up in all"] = time.perf_counter() - started
        self.info = ready

    def _receive(self, event: str) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(WORKER_TAG):
                message: dict[str, Any] = json.loads(line.removeprefix(WORKER_TAG))
                if message["event"] == event:
                    return message
        self.process.wait()
        raise SystemExit(
            f"the MLflow worker exited ({self.process.returncode}) before '{event}':\n{tail(self.log_path)}"
        )

    def batch(self, count: int) -> list[float]:
        """Run ``count`` lifecycles in the worker; return each one's seconds."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        answer = self._receive("batch")
        self.requests += int(answer["calls"])
        return [float(s) for s in answer["seconds"]]

    def finish(self) -> dict[str, Any]:
        """Ask the worker for the final state and let it exit."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        final = self._receive("final")
        self.process.wait(30)
        return final

    def stop(self) -> None:
        """End the worker if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(AttributeError):
            self.log.close()


# -- the run --------------------------------------------------------------------


@dataclass
class Timings:
    """Per-lifecycle seconds of one system."""

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
    """A temporary directory for both systems' data, removed at the end unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="mlledger-lifecycle-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--lifecycles", type=int, default=3, help="lifecycles per system per round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed lifecycles per system first (default 1)")
    parser.add_argument(
        "--database-url", default="", help="ML Ledger on this PostgreSQL in a fresh schema (default: embedded SQLite)"
    )
    parser.add_argument("--projector", action="store_true", help="run the projector inside the ML Ledger server")
    parser.add_argument(
        "--mlflow-store",
        choices=["sqlite", "file"],
        default="sqlite",
        help="MLflow tracking store (default sqlite; 'file' is MLflow 3's deprecated file store)",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument(
        "--buffered-metrics",
        action="store_true",
        help="ML Ledger logs the 200 points through the client's MetricLogger (one call, one "
        "signed batch event) instead of one HTTP call each; MLflow is unchanged",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip 'mlledger verify' after timing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.lifecycles < 1 or args.warmup < 0:
        parser.error("--rounds and --lifecycles must be at least 1, --warmup at least 0")
    install_sigterm_handler()

    python, install_seconds = mlflow_venv(args.cache_dir)
    say("training the model (LogisticRegression on iris)")
    model = train_model()
    params = bench_params()
    with workspace(args.keep) as work:
        model_file = work / "model.pkl"
        model_file.write_bytes(model)
        ledger = LedgerSide(work, args.database_url, args.projector, args.buffered_metrics)
        mlflow = MlflowSide(python, work, args.mlflow_store)
        try:
            ledger.start()
            mlflow.start(model_file)
            result = measure(args, ledger, mlflow, model, params)
            ledger_champion = ledger.champion()
            final = {**mlflow.finish(), "ledger_champion": ledger_champion}
            verified = ([], 0.0) if args.no_verify else verify_ledger(ledger)
            report(args, ledger, mlflow, result, final, verified, install_seconds)
        finally:
            mlflow.stop()
            ledger.stop()
            if args.database_url:
                drop_schema(args.database_url, ledger.schema)
                say(f"dropped schema {ledger.schema}")
    return 0


@dataclass
class Measurement:
    """What the alternating rounds measured."""

    ours: Timings
    theirs: Timings
    events: int = 0
    requests: int = 0
    warmup: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)


def measure(
    args: argparse.Namespace, ledger: LedgerSide, mlflow: MlflowSide, model: bytes, params: dict[str, Any]
) -> Measurement:
    """Warm up each system, then alternate the timed rounds (which system goes first flips each round)."""
    say(f"warm-up: {args.warmup} lifecycle(s) per system")
    result = Measurement(Timings("ML Ledger"), Timings("MLflow"))
    load_before = os.getloadavg()[0]
    number = 0
    started = time.perf_counter()
    for _ in range(args.warmup):
        ledger.lifecycle(number, model, params)
        number += 1
    result.warmup = {
        "ML Ledger": time.perf_counter() - started,
        "MLflow": sum(mlflow.batch(args.warmup)) if args.warmup else 0.0,
    }
    mlflow.requests = 0
    for round_index in range(args.rounds):
        order = ("ledger", "mlflow") if round_index % 2 == 0 else ("mlflow", "ledger")
        for system in order:
            if system == "mlflow":
                result.theirs.seconds += mlflow.batch(args.lifecycles)
                continue
            before = ledger.position()
            for _ in range(args.lifecycles):
                sent = ledger.requests
                started = time.perf_counter()
                ledger.lifecycle(number, model, params)
                result.ours.seconds.append(time.perf_counter() - started)
                result.requests += ledger.requests - sent
                number += 1
            result.events += ledger.position() - before
        say(
            f"round {round_index + 1}/{args.rounds}: ML Ledger {sum(result.ours.seconds[-args.lifecycles :]):.2f} s, "
            f"MLflow {sum(result.theirs.seconds[-args.lifecycles :]):.2f} s for {args.lifecycles} lifecycles each"
        )
    result.load = (load_before, os.getloadavg()[0])
    return result


def verify_ledger(ledger: LedgerSide) -> tuple[list[str], float]:
    """Stop the server, project the log and verify the whole ledger; return the summary lines and seconds."""
    say("ML Ledger: stopping the server, projecting the log and running 'python -m service verify'")
    ledger.stop()
    started = time.perf_counter()
    ledger.cli("project")
    lines = [line for line in ledger.cli("verify").splitlines() if line.startswith(("OK", "transparency"))]
    return lines, time.perf_counter() - started


def report(
    args: argparse.Namespace,
    ledger: LedgerSide,
    mlflow: MlflowSide,
    result: Measurement,
    final: dict[str, Any],
    verified: tuple[list[str], float],
    install_seconds: float | None,
) -> None:
    """Print the results table and the context a reader needs to trust it."""
    ours, theirs = result.ours, result.theirs
    ratio = ours.rate / theirs.rate if theirs.rate else float("inf")
    projector = "with the projector in-process" if args.projector else "--no-projector"
    store = (
        "SQLite tracking store"
        if args.mlflow_store == "sqlite"
        else "file tracking store (deprecated) + SQLite registry"
    )
    journal = f", journal_mode={mlflow.info['journal_mode']}" if args.mlflow_store == "sqlite" else ""
    print()
    metrics = (
        "one client call each, buffered by the client into one signed batch"
        if args.buffered_metrics
        else "one call each"
    )
    print(
        f"One ML lifecycle: run, {PARAMS} params, {METRIC_POINTS} metric points {metrics}, pickled sklearn "
        "model, register, approve, champion"
    )
    print(
        f"{args.rounds} alternating rounds x {args.lifecycles} lifecycles per system, after {args.warmup} warm-up "
        "lifecycle(s) each"
    )
    print(
        f"ML Ledger: real server ({projector}) over HTTP on 127.0.0.1, {ledger.describe()}; "
        "2 signed approvals + operator deploy"
    )
    print(
        f"MLflow {mlflow.info['mlflow']}: MlflowClient in-process (no server, no HTTP), {store}"
        f"{journal}, local artifact root; tag + alias"
    )
    print()
    header = (
        f"{'system':<10} | {'lifecycles':>10} | {'total s':>9} | {'median s/lc':>10} | {'p95 s':>7} | "
        f"{'lifecycles/s':>12}"
    )
    print(header)
    print("-" * len(header))
    print(ours.row())
    print(theirs.row())
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ML Ledger / MLflow lifecycles per second: {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x): {verdict}")
    lifecycles = len(ours.seconds)
    print(
        f"calls per lifecycle: ML Ledger {result.requests / lifecycles:.0f} HTTP requests "
        f"({1000 * sum(ours.seconds) / result.requests:.2f} ms each on average); "
        f"MLflow {mlflow.requests / len(theirs.seconds):.0f} client calls "
        f"({1000 * sum(theirs.seconds) / mlflow.requests:.2f} ms each)"
    )
    print(
        f"signed events written by the timed ML Ledger lifecycles: {result.events:,} (ledger position delta; "
        f"{result.events / lifecycles:.0f} per lifecycle, each Ed25519-signed and hash-chained)"
    )
    lines, seconds = verified
    if lines:
        print(f"after timing, 'mlledger project' + 'mlledger verify' over the whole ledger ({seconds:.1f} s):")
        for line in lines:
            print(f"  {line}")
    print(
        f"final state: ML Ledger champion = version {final['ledger_champion']}; MLflow alias champion = version "
        f"{final['champion']} (tag approval={final['approval']})"
    )
    print()
    print("one-time setup, not timed:")
    install = "already installed (cached)" if install_seconds is None else f"{install_seconds:.1f} s"
    print(f"  MLflow virtualenv ({args.cache_dir / 'mlflow-venv'}): {install}")
    for label, value in mlflow.setup.items():
        print(f"  MLflow {label}: {value:.2f} s")
    for label, value in ledger.setup.items():
        print(f"  ML Ledger {label}: {value:.2f} s")
    print(
        f"  warm-up: ML Ledger {result.warmup['ML Ledger']:.2f} s, MLflow {result.warmup['MLflow']:.2f} s "
        f"for {args.warmup} lifecycle(s)"
    )
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()} (both sides); 1-minute load average {result.load[0]:.1f} before the "
        f"rounds, {result.load[1]:.1f} after"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
