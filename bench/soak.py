"""Endurance under faults: a mixed workload against a production-shaped ledger while processes die.

The topology is the one ``compose.yaml`` runs, on loopback: ``mlledger serve
--no-projector --no-runner --workers N`` (a supervisor and N API processes), a
projector process (``mlledger project --follow``) and a runner process
(``mlledger runner``, holding only its runner API key), on a PostgreSQL
database of their own (``soak_<random>``, dropped at the end). The projector
and the runner are restarted two seconds after they die, as a process manager
would; uvicorn's supervisor replaces API workers itself.

For ``--minutes`` the workload runs, every write through the public HTTP API
with the SDK, and every acknowledged write (2xx) is remembered with its record
id and ledger position:

* single predictions and ``predict:batch`` requests from a predictor;
* runs requested by a data scientist and executed by the runner;
* from time to time a succeeded run becomes a model version, two approvers
  sign approvals with their own keys and an operator deploys it as champion;
* small dataset uploads (blobs);
* audit queries by an auditor (audit trail page, a decision reconstructed,
  lineage, champion at a moment), timed;
* export bundles (``POST /v1/exports``, a sample of predictions) and
  checkpoints (``mlledger checkpoint``).

Every ``--fault-every`` seconds the next fault of the cycle is injected:
SIGKILL of one API worker, SIGKILL of the projector, SIGKILL of the runner,
``pg_terminate_backend`` of every connection to the ledger's database, and a
full disk under the blob store for a while (the blob directory is a small
ext4 image mounted through a loop device, which needs root; without root the
fault is skipped and the report says so).

Afterwards the load stops and the report checks that every acknowledged write
is in the ledger, that the read models caught up and that each equals its
rebuild from the log (what ``mlledger project --rebuild`` does), that ``mlledger verify``
passes, and how the resident memory of the long-lived processes moved; with the
workload counts, every fault and when, the projection lag and RSS over time.

Run from the repository root (as root for the full-disk fault)::

    .venv/bin/python bench/soak.py --minutes 30 --report bench/results/soak-30min.txt
    .venv/bin/python bench/soak.py --minutes 1 --fault-every 10      # one of each fault

The exit status is 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa

from bench.append import DEFAULT_DATABASE_URL, install_sigterm_handler, load_average, machine_line, percentile, say
from bench.serving_setup import (
    ADMIN_KEY,
    REPO,
    Server,
    _grant_approver,
    _person,
    feature_names,
    input_rows,
    process_tree,
    server_env,
    training_csv,
)
from domain.integrity.keys import Signer
from domain.integrity.sealing import format_timestamp
from domain.prediction import Prediction
from mlledger.client import LedgerClient, LedgerClientError
from service.settings import Settings
from service.store.persistence import POSTGRES_EVENTS_TABLE

MODEL = "soak"
PIPELINE = "soak-gbm"
RESTART_DELAY = 2.0  # seconds a killed projector or runner stays down before its manager restarts it
VERIFY_ATTEMPTS = 5
FAULTS = ("kill_api_worker", "kill_projector", "kill_runner", "terminate_db_connections", "blob_disk_full")


# -- the database and the blob disk ------------------------------------------------------


def _server_url(database_url: str, database: str) -> str:
    base = database_url.rsplit("/", 1)[0]
    return f"{base}/{database}"


def _admin_engine(database_url: str) -> sa.Engine:
    url = _server_url(database_url, "postgres").replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def own_database(database_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database ``soak_<random>`` on the server of ``database_url``; yields (name, its URL)."""
    name = f"soak_{secrets.token_hex(5)}"
    engine = _admin_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield name, _server_url(database_url, name)
    finally:
        with engine.connect() as conn:
            terminate_connections(conn, name)
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        engine.dispose()
        say(f"dropped database {name}")


def terminate_connections(conn: sa.Connection, database: str) -> int:
    """``pg_terminate_backend`` every connection to ``database`` but this one; how many were ended."""
    ended = conn.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"
        ),
        {"db": database},
    ).scalar()
    return int(ended or 0)


class BlobDisk:
    """The blob directory on a small ext4 image through a loop device (root only), and a way to fill it."""

    def __init__(self, directory: Path, megabytes: int) -> None:
        self.directory = directory
        self.image = directory.parent / "blobs.img"
        self.megabytes = megabytes
        self.mounted = False
        self.why_not = ""

    def mount(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.why_not = "not root: a loop mount needs root, so the full-disk fault is skipped"
            return
        with self.image.open("wb") as image:
            image.truncate(self.megabytes * 1024 * 1024)
        steps = [
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)],
            ["mount", "-o", "loop", str(self.image), str(self.directory)],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.why_not = f"{' '.join(step[:2])} failed: {done.stderr.strip()[:200]}"
                return
        self.mounted = True

    @property
    def description(self) -> str:
        if self.mounted:
            return f"blob store on a {self.megabytes} MiB ext4 image mounted through a loop device"
        return f"blob store on the ordinary disk ({self.why_not})"

    def fill(self) -> int:
        """Write a filler file until the disk is full (1 MiB writes, then 4 KiB ones); the bytes written."""
        fd = os.open(self.directory / "filler.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        written = 0
        try:
            for size in (1024 * 1024, 4096):
                chunk = b"\0" * size
                with contextlib.suppress(OSError):
                    while (count := os.write(fd, chunk)) > 0:
                        written += count
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        (self.directory / "filler.bin").unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.directory)], capture_output=True, check=False)
            self.mounted = False
        self.image.unlink(missing_ok=True)


# -- processes ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Managed:
    """A process kept running: restarted ``RESTART_DELAY`` seconds after it dies, until stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, clock: Callable[[], float]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.clock = clock
        self.process: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []
        self.died_at: float | None = None
        self.stopping = False

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts.append(self.clock())
        self.died_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def keep_alive(self) -> None:
        """Restart the process if it died at least ``RESTART_DELAY`` seconds ago."""
        if self.stopping or self.process is None or self.process.poll() is None:
            return
        if self.died_at is None:
            self.died_at = self.clock()
        elif self.clock() - self.died_at >= RESTART_DELAY:
            self.start()

    def kill(self) -> int | None:
        """SIGKILL the main process (what its own children do is up to them)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping = True
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def api_workers(supervisor: int) -> list[int]:
    """The API worker processes of a ``serve --workers N`` supervisor."""
    return [
        pid
        for pid in process_tree(supervisor)[1:]
        if "multiprocessing" in _cmdline(pid) and "resource_tracker" not in _cmdline(pid)
    ]


# -- the record of what happened ----------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """An acknowledged write: what, the record id, and the ledger position the service answered."""

    kind: str
    id: str
    position: int | None


@dataclass
class Record:
    """Everything the soak observed, shared by its threads (appends are atomic under the GIL)."""

    started: float = field(default_factory=time.monotonic)
    acks: list[Ack] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)
    causes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    lag: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    rss: list[tuple[float, str, int, int]] = field(default_factory=list)  # (t, role, pid, KiB)
    prediction_ids: list[str] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    def ack(self, kind: str, id_: str, position: int | None, count: int = 1) -> None:
        self.acks.append(Ack(kind, id_, position))
        self.counts[kind] += count

    def error(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] += 1
        self.causes[(kind, f"HTTP {exc.status}" if isinstance(exc, LedgerClientError) else type(exc).__name__)] += 1
        detail = str(exc) if isinstance(exc, LedgerClientError) else f"{type(exc).__name__}: {exc}"
        self.first_errors.setdefault(kind, f"t={self.now():.0f}s {detail[:200]}")

    def fault(self, kind: str, detail: str) -> None:
        self.faults.append((self.now(), kind, detail))
        say(f"[{self.now():7.1f} s] fault {kind}: {detail}")


# -- the world: principals, keys, the first champion ----------------------------------------


@dataclass
class People:
    """The clients and keys of the soak's principals."""

    admin: LedgerClient
    scientist: LedgerClient
    operator: LedgerClient
    predictor_key: str
    auditor_key: str
    runner_key: str
    approvers: list[tuple[LedgerClient, Signer, str]]
    dataset_id: str = ""

    def close(self) -> None:
        for client in (self.admin, self.scientist, self.operator, *(a[0] for a in self.approvers)):
            client.close()


def create_people(base_url: str) -> People:
    """Every principal, each key issued while the bootstrap admin may still act alone, then two admins."""
    admin = LedgerClient(base_url, ADMIN_KEY, timeout=120)
    _, scientist = _person(admin, base_url, "soak-scientist", ["data_scientist"])
    _, operator = _person(admin, base_url, "soak-operator", ["operator"])
    keys = {}
    for name, roles, kind in (
        ("soak-predictor", ["predictor"], "user"),
        ("soak-auditor", ["auditor"], "user"),
        ("soak-runner", ["runner"], "service"),
    ):
        written = admin.create_principal(name, roles, kind=kind)
        keys[name] = admin.issue_api_key(written.id, label=f"{name} key")
    second_id, second = _person(admin, base_url, "soak-second-admin", [])
    people = [_person(admin, base_url, name, ["approver"]) for name in ("soak-vera", "soak-victor")]
    admin.grant_role(second_id, "admin")  # closes the bootstrap: from now on, two admins
    approvers = []
    for principal, client in people:
        _grant_approver(admin, second, principal)
        signer = Signer.generate()
        approvers.append((client, signer, client.register_signing_key(principal, signer)))
    second.close()
    return People(
        admin,
        scientist,
        operator,
        keys["soak-predictor"],
        keys["soak-auditor"],
        keys["soak-runner"],
        approvers,
    )


def pipeline_spec(features: int) -> dict[str, Any]:
    return {
        "estimator": "sklearn.ensemble.GradientBoostingClassifier",
        "estimator_params": {"n_estimators": 20, "max_depth": 2},
        "features": feature_names(features),
        "target": "label",
        "task": "classification",
    }


def promote(people: People, run_id: str, features: int, record: Record | None = None) -> int:
    """Register the run's model as the next version, approve it twice (signed) and deploy it as champion."""
    version, written = people.scientist.register_model_version(
        MODEL,
        run_id,
        "model.pkl",
        input_schema=[{"name": n, "type": "number"} for n in feature_names(features)],
        policy={"min_impact_ratio": None},
    )
    acks = [("model_version", written)]
    for client, signer, key_id in people.approvers:
        acks.append(("approval", client.decide(MODEL, version, signer, key_id, "approve", "soak validation")))
    acks.append(("deployment", people.operator.deploy(MODEL, "champion", version, reason="soak promotion")))
    if record is not None:
        for kind, ack in acks:
            record.ack(kind, ack.id, ack.position)
    return version


# -- the workload ----------------------------------------------------------------------------


class Workload:
    """The load generator threads; each loops until ``stop`` is set, pacing itself."""

    def __init__(
        self,
        base_url: str,
        people: People,
        record: Record,
        features: int,
        rows: list[dict[str, float]],
        env: dict[str, str],
    ) -> None:
        self.base_url = base_url
        self.env = env
        self.people = people
        self.record = record
        self.features = features
        self.rows = rows
        self.stop = threading.Event()
        self.runs_succeeded: list[str] = []
        self.runs_requested: list[str] = []
        self.threads: list[threading.Thread] = []

    def client(self, key: str) -> LedgerClient:
        return LedgerClient(self.base_url, key, timeout=60)

    def every(self, seconds: float, kind: str, action: Callable[[], None]) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                action()
            except Exception as exc:  # a fault in progress: counted, the loop goes on
                self.record.error(kind, exc)
            self.stop.wait(max(0.0, seconds - (time.monotonic() - began)))

    def start(self, rate: float) -> None:
        predictor = self.client(self.people.predictor_key)
        predictor2 = self.client(self.people.predictor_key)
        auditor = self.client(self.people.auditor_key)
        exporter = self.client(self.people.auditor_key)
        loops: list[tuple[float, str, Callable[[], None]]] = [
            (2.0 / rate, "prediction", lambda: self.predict_one(predictor)),
            (2.0 / rate, "prediction", lambda: self.predict_one(predictor2)),
            (2.0, "prediction_batch", lambda: self.predict_batch(predictor)),
            (15.0, "run", self.request_run),
            (3.0, "run_poll", self.poll_runs),
            (90.0, "promotion", self.promote_latest),
            (30.0, "dataset_upload", self.upload_dataset),
            (0.5, "audit_query", lambda: self.audit(auditor)),
            (240.0, "export", lambda: self.export(exporter)),
            (60.0, "checkpoint", self.checkpoint),
        ]
        for seconds, kind, action in loops:
            thread = threading.Thread(target=self.every, args=(seconds, kind, action), name=kind, daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)

    # each action: one request or a few, acknowledged writes recorded
    def predict_one(self, client: LedgerClient) -> None:
        request_id = f"soak-{uuid.uuid4().hex}"
        answer = client.predict(MODEL, random.choice(self.rows), request_id=request_id)
        self.record.ack("prediction", answer["prediction_id"], int(answer["position"]))
        self.record.prediction_ids.append(answer["prediction_id"])

    def predict_batch(self, client: LedgerClient) -> None:
        prefix = uuid.uuid4().hex
        records = [{"input": random.choice(self.rows), "request_id": f"soak-{prefix}-{i}"} for i in range(50)]
        answer = client.predict_batch(MODEL, records)
        for served in answer["predictions"]:
            self.record.acks.append(Ack("prediction_batch", served["prediction_id"], None))
        self.record.acks.append(Ack("prediction_batch_position", "", int(answer["position"])))
        self.record.counts["prediction_batch"] += 1
        self.record.counts["prediction_in_batches"] += len(answer["predictions"])

    def request_run(self) -> None:
        written = self.people.scientist.start_run(
            name="soak-run",
            mode="runner",
            pipeline=PIPELINE,
            dataset_version_ids=[self.people.dataset_id],
            seed=random.randrange(1_000_000),
        )
        self.record.ack("run_requested", written.id, written.position)
        self.runs_requested.append(written.id)

    def poll_runs(self) -> None:
        for run_id in list(self.runs_requested):
            status = self.people.scientist.run(run_id)["status"]
            if status in ("succeeded", "failed", "cancelled", "abandoned"):
                self.runs_requested.remove(run_id)
                self.record.counts[f"run_{status}"] += 1
                if status == "succeeded":
                    self.runs_succeeded.append(run_id)

    def promote_latest(self) -> None:
        if self.runs_succeeded:
            promote(self.people, self.runs_succeeded.pop(), self.features, self.record)
            self.record.counts["promotion"] += 1

    def upload_dataset(self) -> None:
        data = training_csv(200, self.features, seed=random.randrange(1_000_000))
        written = self.people.scientist.upload_dataset(f"soak-upload-{uuid.uuid4().hex[:8]}", data)
        self.record.ack("dataset_upload", written.id, written.position)

    def audit(self, client: LedgerClient) -> None:
        kind = random.choice(("audit_page", "decision", "lineage", "champion_at"))
        began = time.perf_counter()
        if kind == "audit_page":
            client.audit_events(model=MODEL, limit=100)
        elif kind == "decision":
            if not self.record.prediction_ids:
                return
            client.decision(random.choice(self.record.prediction_ids[-5000:]))
        elif kind == "lineage":
            client.lineage(MODEL, 1)
        else:
            client.champion_at(MODEL, format_timestamp(datetime.now(UTC)))
        self.record.latencies[kind].append((time.perf_counter() - began) * 1000)
        self.record.counts["audit_query"] += 1

    def export(self, client: LedgerClient) -> None:
        answer = client.create_export(MODEL, predictions="sample", sample_size=500)
        self.record.ack("export", str(answer["id"]), answer.get("position"))

    def checkpoint(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "service", "checkpoint"],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mlledger checkpoint exited {done.returncode}: {done.stderr.strip()[-200:]}")
        self.record.counts["checkpoint"] += 1


# -- faults ----------------------------------------------------------------------------------


class Faults:
    """Injects the next fault of the cycle every ``every`` seconds."""

    def __init__(self, soak: Soak, every: float) -> None:
        self.soak = soak
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="faults", daemon=True)
        self.skipped: list[str] = []

    def loop(self) -> None:
        index = 0
        self.stop.wait(self.every / 2)
        while not self.stop.is_set():
            kind = FAULTS[index % len(FAULTS)]
            try:
                getattr(self, kind)()
            except Exception as exc:
                self.soak.record.fault(kind, f"could not inject: {type(exc).__name__}: {exc}")
            index += 1
            self.stop.wait(self.every)

    def kill_api_worker(self) -> None:
        workers = api_workers(self.soak.server.pid)
        if not workers:
            self.soak.record.fault("kill_api_worker", "no API worker alive to kill")
            return
        victim = random.choice(workers)
        os.kill(victim, signal.SIGKILL)
        self.soak.record.fault("kill_api_worker", f"SIGKILL pid {victim} (of {len(workers)} workers)")

    def kill_projector(self) -> None:
        self.soak.record.fault("kill_projector", f"SIGKILL pid {self.soak.projector.kill()}")

    def kill_runner(self) -> None:
        self.soak.record.fault("kill_runner", f"SIGKILL pid {self.soak.runner.kill()}")

    def terminate_db_connections(self) -> None:
        with self.soak.admin_engine.connect() as conn:
            ended = terminate_connections(conn, self.soak.database)
        self.soak.record.fault("terminate_db_connections", f"pg_terminate_backend ended {ended} connections")

    def blob_disk_full(self) -> None:
        disk = self.soak.disk
        if not disk.mounted:
            self.skipped.append(disk.why_not)
            self.soak.record.fault("blob_disk_full", f"skipped: {disk.why_not}")
            return
        filled = disk.fill()
        hold = min(20.0, self.every / 3)
        self.soak.record.fault("blob_disk_full", f"blob disk filled (+{filled // 2**20} MiB), held {hold:.0f} s")
        try:
            probe = self.soak.people.scientist
            try:
                probe.upload_dataset(f"soak-full-{uuid.uuid4().hex[:8]}", training_csv(200, self.soak.features))
                outcome = "upload ACCEPTED on a full disk"
            except LedgerClientError as exc:
                outcome = f"upload refused with {exc.status} {exc.problem.get('title', '')}"
            except httpx.HTTPError as exc:
                outcome = f"upload failed: {type(exc).__name__}"
            self.soak.record.fault("blob_disk_full", f"while full: {outcome}")
            self.stop.wait(hold)
        finally:
            disk.free()
        self.soak.record.fault("blob_disk_full", "blob disk freed")


# -- the soak ---------------------------------------------------------------------------------


class Soak:
    """Sets the world up, runs the workload and the faults, watches, and checks afterwards."""

    def __init__(self, args: argparse.Namespace, tmp: Path, database: str, database_url: str) -> None:
        self.args = args
        self.tmp = tmp
        self.database = database
        self.features = args.features
        self.record = Record()
        self.admin_engine = _admin_engine(args.database_url)
        self.settings = Settings(
            data_dir=tmp / "data",
            database_url=database_url,
            admin_api_key=ADMIN_KEY,
            heartbeat_seconds=1,
            heartbeat_timeout_seconds=10,
        )
        self.disk = BlobDisk(self.settings.blobs_dir, args.blob_disk_mib)
        self.env = server_env(self.settings)
        self.server = Server(self.settings, tmp / "serve.log", projector=False, runner=False, workers=args.workers)
        python = sys.executable
        self.projector = Managed(
            "projector", [python, "-m", "service", "project", "--follow"], self.env, tmp / "projector.log", self.now
        )
        self.runner: Managed = Managed("runner", [], {}, tmp / "runner.log", self.now)
        self.people: People
        self.monitor_stop = threading.Event()

    def now(self) -> float:
        return self.record.now()

    def setup(self) -> None:
        self.disk.mount()  # before anything writes a blob, so none is hidden under the mount
        subprocess.run(
            [sys.executable, "-m", "service", "migrate"], env=self.env, cwd=REPO, check=True, capture_output=True
        )
        self.server.start()
        self.projector.start()
        self.people = create_people(self.server.base_url)
        runner_env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
        runner_env.update(
            {
                "MLLEDGER_LEDGER_URL": self.server.base_url,
                "MLLEDGER_RUNNER_API_KEY": self.people.runner_key,
                "MLLEDGER_RUNNER_KEY_FILE": str(self.tmp / "runner-key.pem"),
                "MLLEDGER_HEARTBEAT_SECONDS": "1",
            }
        )
        self.runner = Managed(
            "runner",
            [sys.executable, "-m", "service", "runner", "--device", "cpu", "--concurrency", "1"],
            runner_env,
            self.tmp / "runner.log",
            self.now,
        )
        self.runner.start()
        scientist = self.people.scientist
        dataset = scientist.upload_dataset(
            "soak-train", training_csv(self.args.rows, self.features), datasheet={"motivation": "soak"}
        )
        self.people.dataset_id = dataset.id
        scientist.add_pipeline_spec(PIPELINE, "sklearn", pipeline_spec(self.features))
        run = scientist.start_run(
            name="soak-first", mode="runner", pipeline=PIPELINE, dataset_version_ids=[dataset.id], seed=1
        )
        finished = scientist.wait_for_run(run.id, timeout=600)
        if finished["status"] != "succeeded":
            raise SystemExit(f"first training run {finished['status']}: {finished.get('error')}\n{self.tail('runner')}")
        promote(self.people, run.id, self.features)

    def tail(self, name: str, chars: int = 2000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- watching
    def monitor(self) -> None:
        last_sample = -1e9
        while not self.monitor_stop.is_set():
            self.projector.keep_alive()
            self.runner.keep_alive()
            if self.now() - last_sample >= self.args.sample_every:
                last_sample = self.now()
                self.sample()
            self.monitor_stop.wait(0.5)

    def sample(self) -> None:
        t = self.now()
        try:
            ready = httpx.get(f"{self.server.base_url}/readyz", timeout=5).json()
            lags = {k: int(v) for k, v in ready.get("projection_lag", {}).items()}
            self.record.lag.append((t, int(ready.get("position", 0)), lags))
        except (httpx.HTTPError, ValueError):
            self.record.lag.append((t, -1, {}))
        roles: list[tuple[str, int | None]] = [
            ("api-supervisor", self.server.pid),
            ("projector", self.projector.pid),
            ("runner", self.runner.pid),
        ]
        roles += [("api-worker", pid) for pid in api_workers(self.server.pid)]
        for role, pid in roles:
            if pid is not None and (kib := rss_kib(pid)) is not None:
                self.record.rss.append((t, role, pid, kib))

    def wait_caught_up(self, timeout: float) -> tuple[bool, float]:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            self.projector.keep_alive()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                ready = httpx.get(f"{self.server.base_url}/readyz", timeout=5).json()
                if ready.get("projection_lag") and not any(ready["projection_lag"].values()):
                    return True, time.monotonic() - began
            time.sleep(1)
        return False, time.monotonic() - began

    def run(self) -> None:
        rows = input_rows(2000, self.features)
        workload = Workload(self.server.base_url, self.people, self.record, self.features, rows, self.env)
        faults = Faults(self, self.args.fault_every)
        self.faults = faults
        self.record.started = time.monotonic()
        monitor = threading.Thread(target=self.monitor, name="monitor", daemon=True)
        monitor.start()
        workload.start(self.args.predict_rate)
        faults.thread.start()
        deadline = self.args.minutes * 60
        while self.now() < deadline:
            time.sleep(min(10.0, max(0.1, deadline - self.now())))
            say(
                f"[{self.now():7.1f} s] acks {len(self.record.acks):,}, errors {sum(self.record.errors.values())}, "
                f"load {load_average()}"
            )
        faults.stop.set()
        faults.thread.join(timeout=120)
        self.disk.free()
        workload.join()
        self.load_end = load_average()
        self.sample()
        self.caught_up = self.wait_caught_up(600)
        self.sample()
        self.monitor_stop.set()
        monitor.join(timeout=30)
        self.soak_seconds = self.now()

    def shutdown(self) -> None:
        self.monitor_stop.set()
        for managed in (self.runner, self.projector):
            managed.stop()
        self.server.stop()
        with contextlib.suppress(Exception):
            self.people.close()


# -- checks afterwards ---------------------------------------------------------------------------


@dataclass
class Checks:
    """What the checks after the soak found."""

    acked: int = 0
    missing: list[Ack] = field(default_factory=list)
    rebuild: dict[str, bool] = field(default_factory=dict)
    rebuild_seconds: float = 0.0
    verify_rc: int = -1
    verify_out: str = ""
    verify_seconds: float = 0.0
    events: int = 0
    predictions_recorded: int = 0
    verify_attempts: int = 0


def check_acknowledged(engine: sa.Engine, acks: list[Ack]) -> tuple[list[Ack], int]:
    """The acknowledged writes the ledger lacks: record id not found, or no event at the position."""
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(sa.text(f"SELECT DISTINCT originator_id::text FROM {POSTGRES_EVENTS_TABLE}"))}
        positions = {r[0] for r in conn.execute(sa.text(f"SELECT notification_id FROM {POSTGRES_EVENTS_TABLE}"))}
    missing = []
    for ack in acks:
        if (ack.id and ack.kind != "export" and ack.id not in ids) or (
            ack.position is not None and ack.position not in positions
        ):
            missing.append(ack)
    return missing, len(positions)


def check_exports(engine: sa.Engine, acks: list[Ack]) -> list[Ack]:
    """Acknowledged exports whose id names no record in the ledger."""
    exports = [a for a in acks if a.kind == "export"]
    if not exports:
        return []
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(sa.text(f"SELECT DISTINCT originator_id::text FROM {POSTGRES_EVENTS_TABLE}"))}
    return [a for a in exports if a.id not in ids]


def table_digests(engine: sa.Engine, tables: tuple[sa.Table, ...]) -> dict[str, str]:
    """A digest of every row of every table, in primary-key order."""
    out = {}
    with engine.connect() as conn:
        for table in tables:
            digest = hashlib.sha256()
            rows = 0
            for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
                rows += 1
            out[table.name] = f"{rows} rows {digest.hexdigest()[:16]}"
    return out


def run_checks(soak: Soak) -> Checks:
    from service.bootstrap import open_services

    checks = Checks(acked=len(soak.record.acks))
    services = open_services(soak.settings)
    try:
        engine = services.engine
        missing, checks.events = check_acknowledged(engine, soak.record.acks)
        checks.missing = missing + check_exports(engine, soak.record.acks)
        with engine.connect() as conn:
            checks.predictions_recorded = int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {POSTGRES_EVENTS_TABLE} WHERE topic = :topic"),
                    {"topic": Prediction.Made.TOPIC},
                ).scalar()
                or 0
            )
        projections = dict(services.runner.projections)
        began = time.monotonic()
        for name, projection in sorted(projections.items()):
            before = table_digests(engine, projection.tables)
            services.runner.rebuild(name)  # what ``mlledger project --rebuild NAME`` does
            after = table_digests(engine, projection.tables)
            checks.rebuild[name] = before == after
            if not checks.rebuild[name]:
                say(f"rebuild of {name} differs:\n before {before}\n after  {after}")
        checks.rebuild_seconds = time.monotonic() - began
    finally:
        services.close()
    for attempt in range(1, VERIFY_ATTEMPTS + 1):
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "service", "verify"],
            env=soak.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        checks.verify_seconds = time.monotonic() - began
        checks.verify_rc = done.returncode
        checks.verify_out = (done.stdout + done.stderr).strip()
        checks.verify_attempts = attempt
        # a shared database server may be out of connections: that says nothing of the ledger, so try again
        if done.returncode == 0 or "too many clients" not in checks.verify_out:
            break
        time.sleep(15)
    return checks


# -- the report ----------------------------------------------------------------------------------


RSS_WARMUP_SECONDS = 60.0  # a process's first minute (imports, model loads, first batches) is not judged
RSS_MIN_SPAN_SECONDS = 180.0  # judged only when it lived this long after warm-up


@dataclass(frozen=True)
class MemoryTrend:
    """The resident memory of one process after its warm-up: early and late medians (KiB), and the verdict."""

    role: str
    pid: int
    samples: int
    span: float
    early: int
    late: int

    @property
    def growth(self) -> float:
        return (self.late - self.early) / self.early if self.early else 0.0

    @property
    def flat(self) -> bool:
        """Within 20% (or 32 MiB) between the first and the last third of its life after warm-up."""
        return self.late - self.early <= max(0.2 * self.early, 32 * 1024)


def memory_trends(record: Record) -> list[MemoryTrend]:
    """Each process that lived at least ``RSS_MIN_SPAN_SECONDS`` after its warm-up, with its trend."""
    by_pid: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    for t, role, pid, kib in record.rss:
        by_pid[(role, pid)].append((t, kib))
    out = []
    for (role, pid), samples in sorted(by_pid.items()):
        born = samples[0][0]
        kept = [kib for t, kib in samples if t >= born + RSS_WARMUP_SECONDS]
        span = samples[-1][0] - born - RSS_WARMUP_SECONDS
        if span < RSS_MIN_SPAN_SECONDS or len(kept) < 6:
            continue
        third = len(kept) // 3
        out.append(
            MemoryTrend(
                role, pid, len(kept), span, int(statistics.median(kept[:third])), int(statistics.median(kept[-third:]))
            )
        )
    return out


def role_maxima(record: Record, windows: int = 6) -> list[tuple[float, dict[str, int]]]:
    """Per stretch of the soak, the largest RSS (KiB) of any process of each role: bounded across restarts."""
    if not record.rss:
        return []
    end = max(t for t, *_ in record.rss)
    width = max(end / windows, 1e-9)
    out: list[tuple[float, dict[str, int]]] = [(i * width, {}) for i in range(windows)]
    for t, role, _, kib in record.rss:
        bucket = out[min(windows - 1, int(t / width))][1]
        bucket[role] = max(bucket.get(role, 0), kib)
    return out


def report(soak: Soak, checks: Checks, load_start: str, database: str) -> tuple[str, bool]:
    record = soak.record
    lines: list[str] = []
    add = lines.append
    add("ML Ledger soak under faults")
    add(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    add(machine_line(database))
    add(f"load average (1/5/15 min): {load_start} at start, {soak.load_end} at the end of the load")
    add(
        f"topology: serve --no-projector --no-runner --workers {soak.args.workers}; project --follow; "
        f"runner --device cpu --concurrency 1; {soak.disk.description}"
    )
    add(
        f"duration: {soak.args.minutes:g} min of load, a fault every {soak.args.fault_every:g} s "
        f"(soak wall time incl. catch-up {soak.soak_seconds:.0f} s)"
    )
    add("")
    add("workload (acknowledged = answered 2xx)")
    for kind, count in sorted(record.counts.items()):
        add(f"  {kind:24} {count:>9,}   errors {record.errors.get(kind, 0):,}")
    for kind, count in sorted(record.errors.items()):
        if kind not in record.counts:
            add(f"  {kind:24} {0:>9,}   errors {count:,}")
    add("  errors by cause: " + ", ".join(f"{k} {c}: {n}" for (k, c), n in sorted(record.causes.items())))
    add("  first error of each kind (during faults, expected):")
    for kind, text in sorted(record.first_errors.items()):
        add(f"    {kind}: {text}")
    add("")
    add("audit queries during the soak (ms, through the API, under load and faults)")
    for kind, values in sorted(record.latencies.items()):
        add(
            f"  {kind:14} n={len(values):6,}  p50 {percentile(values, 0.5):7.1f}  p95 {percentile(values, 0.95):7.1f}"
            f"  p99 {percentile(values, 0.99):7.1f}"
        )
    add("")
    add("faults (seconds from the start of the load)")
    counted = Counter(kind for _, kind, detail in record.faults if not detail.startswith(("while", "blob disk freed")))
    for t, kind, detail in record.faults:
        add(f"  {t:8.1f}  {kind:26} {detail}")
    add("  injected: " + ", ".join(f"{kind} x{counted.get(kind, 0)}" for kind in FAULTS))
    add("")
    add("projection lag over time (events behind the log head, from /readyz)")
    stride = max(1, len(record.lag) // 40)
    for t, head, lags in record.lag[::stride] + record.lag[-1:]:
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(lags.items())) if head >= 0 else "/readyz unavailable"
        add(f"  {t:8.1f}  head {head:>9,}  {shown}")
    caught, waited = soak.caught_up
    add(f"  after the load: {'caught up' if caught else 'NOT caught up'} in {waited:.1f} s")
    add("")
    add("resident memory over time (MiB; per role, the processes alive at each sample)")
    times = sorted({t for t, *_ in record.rss})
    stride = max(1, len(times) // 30)
    shown_times = set(times[::stride] + times[-1:])
    by_time: dict[float, list[str]] = defaultdict(list)
    for t, role, pid, kib in record.rss:
        if t in shown_times:
            by_time[t].append(f"{role}[{pid}] {kib / 1024:.0f}")
    for t in sorted(by_time):
        add(f"  {t:8.1f}  " + "  ".join(by_time[t]))
    add("  largest RSS per role in each sixth of the soak (MiB; bounded across restarts)")
    for start, maxima in role_maxima(record):
        add(f"    from {start:7.0f} s  " + "  ".join(f"{r} {k / 1024:.0f}" for r, k in sorted(maxima.items())))
    trends = memory_trends(record)
    add(
        f"  processes that lived >= {RSS_MIN_SPAN_SECONDS:.0f} s after a {RSS_WARMUP_SECONDS:.0f} s warm-up: "
        "median MiB of the first third of that time -> of the last third"
    )
    for trend in trends:
        add(
            f"    {trend.role:15} pid {trend.pid:>7}  {trend.samples:4} samples over {trend.span:5.0f} s  "
            f"{trend.early / 1024:7.1f} -> {trend.late / 1024:7.1f}  ({trend.growth:+.1%})  "
            f"{'flat' if trend.flat else 'GROWING'}"
        )
    if not trends:
        add("    none lived that long: memory not judged")
    memory_ok = all(trend.flat for trend in trends)
    add("")
    add("checks")
    acked_ok = not checks.missing
    add(
        f"  acknowledged writes: {checks.acked:,}; missing from the ledger: {len(checks.missing)} "
        f"({checks.events:,} events in the ledger) => {'OK' if acked_ok else 'MISSING'}"
    )
    acked_predictions = sum(1 for a in record.acks if a.kind in ("prediction", "prediction_batch"))
    add(
        f"  predictions: {acked_predictions:,} acknowledged, {checks.predictions_recorded:,} recorded; "
        f"{checks.predictions_recorded - acked_predictions:,} more recorded than acknowledged "
        "(committed, but the answer was lost to a fault)"
    )
    for ack in checks.missing[:10]:
        add(f"    missing: {ack}")
    rebuild_ok = bool(checks.rebuild) and all(checks.rebuild.values())
    add(
        "  read models equal to their rebuild: "
        + ", ".join(f"{k} {'equal' if v else 'DIFFERENT'}" for k, v in sorted(checks.rebuild.items()))
        + f" ({checks.rebuild_seconds:.0f} s)"
    )
    verify_ok = checks.verify_rc == 0
    attempts = (
        f" (attempt {checks.verify_attempts}: the server was out of connections before)"
        if (checks.verify_attempts > 1)
        else ""
    )
    add(f"  mlledger verify: exit {checks.verify_rc} in {checks.verify_seconds:.1f} s{attempts}")
    for line in checks.verify_out.splitlines()[-6:]:
        add(f"    {line}")
    judged = f"yes ({len(trends)} processes judged)" if trends else "not judged (no process lived long enough)"
    add(f"  memory of long-lived processes flat: {judged if memory_ok else 'NO'}")
    all_faults = all(counted.get(kind, 0) > 0 for kind in FAULTS)
    ok = acked_ok and rebuild_ok and verify_ok and caught and memory_ok
    add(f"verdict: {'PASS' if ok else 'FAIL'}" + ("" if all_faults else " (not every fault kind was injected)"))
    return "\n".join(lines) + "\n", ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults (default 60)")
    parser.add_argument("--workers", type=int, default=2, help="API processes (default 2)")
    parser.add_argument("--predict-rate", type=float, default=20.0, help="single predictions per second (default 20)")
    parser.add_argument("--features", type=int, default=10, help="model features (default 10)")
    parser.add_argument("--rows", type=int, default=2000, help="training rows (default 2000)")
    parser.add_argument("--blob-disk-mib", type=int, default=256, help="size of the blob disk image (default 256)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between lag/RSS samples")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a PostgreSQL server (any database)")
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    parser.add_argument("--logs", type=Path, help="copy the processes' logs into this directory at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_handler()
    load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="mlledger-soak-"))
    ok = False
    try:
        with own_database(args.database_url) as (database, url):
            soak = Soak(args, tmp, database, url)
            try:
                say("setting up: API, projector, principals, runner, the first champion")
                soak.setup()
                say(f"soaking for {args.minutes:g} min, a fault every {args.fault_every:g} s")
                soak.run()
            except BaseException:
                for name in ("serve", "projector", "runner"):
                    say(f"--- {name}.log ---\n{soak.tail(name)}")
                raise
            finally:
                soak.shutdown()
                soak.disk.free()
            say("checking: acknowledged writes, rebuilds, verify")
            checks = run_checks(soak)
            from bench.append import describe_database

            text, ok = report(soak, checks, load_start, describe_database(soak.settings))
            soak.disk.unmount()
            soak.admin_engine.dispose()
        print(text, end="")
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(text)
    except Exception:
        traceback.print_exc()
        return 2
    finally:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(tmp / "data" / "blobs")], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
