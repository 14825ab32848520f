"""Shared setup of the serving benchmarks: a ledger, a real server, a deployed gradient-boosting model.

``serving_ledger`` gives settings for a fresh PostgreSQL schema ``bench_<random>``
(dropped at the end, also on failure or Ctrl-C) with a known admin API key, and
migrates it. ``Server`` runs ``python -m service serve --port P`` as a
subprocess on a free port with those settings in its environment (its log goes
to a file). ``deploy_model`` then does what an organisation would do through
the API: the admin creates a data scientist, two approvers with signing keys,
an operator and a predictor; the scientist uploads a 30-feature CSV
(``make_classification``, seeded) and records an sklearn pipeline
(``GradientBoostingClassifier``, 100 trees); the server's own runner trains it;
the version is registered, approved by two signers and deployed as champion.

``ledger_predictions`` counts what the benches must find in the ledger
afterwards: the ``Prediction`` events, their ids and the number of distinct
PostgreSQL transactions that wrote them (``xmin``), which is the number of
group commits that served the load.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import io
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa

from bench.append import (
    DEFAULT_DATABASE_URL,
    describe_database,
    drop_schema,
    load_average,
    machine_line,
    opened,
    percentile,
    say,
)
from domain.integrity.keys import Signer
from domain.prediction import Prediction
from mlledger.client import ChangePending, LedgerClient
from service.settings import Settings
from service.store.persistence import POSTGRES_EVENTS_TABLE, create_engine

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "mll_bench-admin-key-" + "0123456789abcdefghij"
MODEL = "scoring"
FEATURES = 30
TRAINING_ROWS = 4_000
ESTIMATORS = 100
MAX_DEPTH = 3
SEED = 7
CORES = os.cpu_count() or 1  # the serving benches run one API process per core, as a deployment would


# -- data -----------------------------------------------------------------------


def feature_names(count: int = FEATURES) -> list[str]:
    """The model's feature columns."""
    return [f"f{j}" for j in range(count)]


def training_table(rows: int = TRAINING_ROWS, features: int = FEATURES, seed: int = SEED) -> tuple[Any, Any]:
    """A learnable binary classification problem (the same for the same arguments)."""
    from sklearn.datasets import make_classification

    return make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 4,
        flip_y=0.05,
        random_state=seed,
    )


def training_csv(rows: int = TRAINING_ROWS, features: int = FEATURES, seed: int = SEED) -> bytes:
    """The training table as CSV: the features with 6 decimals, then the integer ``label``."""
    X, y = training_table(rows, features, seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*feature_names(features), "label"])
    for values, label in zip(X.tolist(), y.tolist(), strict=True):
        writer.writerow([f"{v:.6f}" for v in values] + [int(label)])
    return out.getvalue().encode()


def input_rows(count: int, features: int = FEATURES, seed: int = SEED + 1) -> list[dict[str, float]]:
    """Records to predict, drawn like the training data (another seed)."""
    X, _ = training_table(count, features, seed)
    names = feature_names(features)
    return [{name: round(v, 6) for name, v in zip(names, values, strict=True)} for values in X.tolist()]


# -- the ledger and the server ------------------------------------------------------


@contextlib.contextmanager
def serving_ledger(database_url: str, **overrides: Any) -> Iterator[Settings]:
    """Settings for a fresh, migrated ``bench_<random>`` schema with the admin key ``ADMIN_KEY``.

    The schema and the temporary data directory are removed when the block exits, however it exits.
    """
    tmp = Path(tempfile.mkdtemp(prefix="mlledger-serving-"))
    schema = f"bench_{secrets.token_hex(6)}"
    settings = Settings(
        data_dir=tmp / "data",
        database_url=database_url,
        database_schema=schema,
        admin_api_key=ADMIN_KEY,
        **overrides,
    )
    try:
        with opened(settings):
            pass  # migrations, the ledger key and the first admin
        yield settings
    finally:
        try:
            drop_schema(database_url, schema)
            say(f"dropped schema {schema}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def server_env(settings: Settings, log_level: str = "WARNING") -> dict[str, str]:
    """This process's environment with the ledger's settings as ``MLLEDGER_`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"MLLEDGER_{name.upper()}"] = str(value)
    env["MLLEDGER_LOG_LEVEL"] = log_level
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A ``python -m service serve`` subprocess on a free port, logging to a file."""

    def __init__(
        self, settings: Settings, log_path: Path, *, projector: bool = True, runner: bool = True, workers: int = 1
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.flags = [
            "--port",
            str(self.port),
            "--projector" if projector else "--no-projector",
            "--runner" if runner else "--no-runner",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self.process is None:
            raise RuntimeError("the server is not started")
        return self.process.pid

    @property
    def command(self) -> str:
        """The command line, for the report."""
        return "python -m service serve " + " ".join(self.flags)

    def start(self, timeout: float = 120.0) -> Server:
        """Start the server and wait until ``/healthz`` answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", *self.flags],
                env=server_env(self.settings),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (the server finishes what is queued), SIGKILL after 60 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- the deployed model ---------------------------------------------------------------


@dataclass(frozen=True)
class Deployed:
    """A champion ready to serve, and the predictor's API key."""

    model: str
    version: int
    features: list[str]
    predictor_key: str
    training_seconds: float


def _person(admin: LedgerClient, base_url: str, name: str, roles: list[str]) -> tuple[str, LedgerClient]:
    """A principal and its client, set up in the bootstrap: the bootstrap admin acts alone until the
    first approver grant, so every key is issued and every plain role granted before the approvers'."""
    written = admin.create_principal(name, [r for r in roles if r != "approver"])
    token = admin.issue_api_key(written.id, label=f"{name}'s key")
    return written.id, LedgerClient(base_url, token, timeout=120)


def _grant_approver(admin: LedgerClient, second: LedgerClient, principal_id: str) -> None:
    """Grant ``approver``: alone in the bootstrap, else confirmed by the second admin (four eyes)."""
    try:
        admin.grant_role(principal_id, "approver", reason="benchmark approver")
    except ChangePending as pending:
        second.confirm_change(pending.change_id)


def deploy_model(base_url: str, features: int = FEATURES, rows: int = TRAINING_ROWS) -> Deployed:
    """Train (on the server's runner), register, approve twice (signed) and deploy the benchmark model."""
    names = feature_names(features)
    with LedgerClient(base_url, ADMIN_KEY, timeout=120) as admin:
        _, scientist = _person(admin, base_url, "sam", ["data_scientist"])
        _, operator = _person(admin, base_url, "otto", ["operator"])
        predictor = admin.create_principal("pat", ["predictor"])
        predictor_key = admin.issue_api_key(predictor.id, label="load generator")
        second_id, second = _person(admin, base_url, "ada", [])
        people = [_person(admin, base_url, name, ["approver"]) for name in ("vera", "victor")]
        admin.grant_role(second_id, "admin")  # closes the bootstrap: from now on, two admins
        approvers = []
        for principal, client in people:
            _grant_approver(admin, second, principal)
            signer = Signer.generate()
            approvers.append((client, signer, client.register_signing_key(principal, signer)))
    try:
        dataset = scientist.upload_dataset(
            "scoring-train", training_csv(rows, features), datasheet={"motivation": "serving benchmark"}
        )
        spec = {
            "estimator": "sklearn.ensemble.GradientBoostingClassifier",
            "estimator_params": {"n_estimators": ESTIMATORS, "max_depth": MAX_DEPTH},
            "features": names,
            "target": "label",
            "task": "classification",
        }
        scientist.add_pipeline_spec("scoring-gbm", "sklearn", spec)
        started = time.monotonic()
        run = scientist.start_run(
            name="scoring-gbm", mode="runner", pipeline="scoring-gbm", dataset_version_ids=[dataset.id], seed=SEED
        )
        finished = scientist.wait_for_run(run.id, timeout=600)
        training_seconds = time.monotonic() - started
        if finished["status"] != "succeeded":
            raise SystemExit(f"training run {run.id} {finished['status']}: {finished.get('error')}")
        version, _ = scientist.register_model_version(
            MODEL,
            run.id,
            "model.pkl",
            input_schema=[{"name": n, "type": "number"} for n in names],
            policy={"min_impact_ratio": None},
        )
        for client, signer, key_id in approvers:
            client.decide(MODEL, version, signer, key_id, "approve", "validated for the serving benchmark")
        operator.deploy(MODEL, "champion", version, reason="serving benchmark")
    finally:
        for client in (scientist, operator, *(a[0] for a in approvers)):
            client.close()
    return Deployed(MODEL, version, names, predictor_key, training_seconds)


# -- what the ledger holds ---------------------------------------------------------------


@dataclass(frozen=True)
class LedgerPredictions:
    """The prediction events recorded after a position."""

    ids: set[str]
    events: int
    transactions: int


def ledger_predictions(
    settings: Settings, after: int = 0, upto: int | None = None, topic: str = Prediction.Made.TOPIC
) -> LedgerPredictions:
    """Prediction events (of ``topic``) with positions in (after, upto]: their ids, and how many transactions
    wrote them."""
    engine = create_engine(settings, poolclass=sa.NullPool)
    table = f'"{settings.database_schema}".{POSTGRES_EVENTS_TABLE}'
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT originator_id::text, xmin::text FROM {table} "
                    "WHERE topic = :topic AND notification_id > :after AND notification_id <= :upto"
                ),
                {"topic": topic, "after": after, "upto": upto if upto is not None else 2**62},
            ).all()
    finally:
        engine.dispose()
    return LedgerPredictions({r[0] for r in rows}, len(rows), len({r[1] for r in rows}))


def ledger_position(settings: Settings) -> int:
    """The last notification id in the ledger."""
    engine = create_engine(settings, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(f'SELECT max(notification_id) FROM "{settings.database_schema}".{POSTGRES_EVENTS_TABLE}')
            ).scalar()
    finally:
        engine.dispose()
    return int(found or 0)


def ledger_check(recorded: LedgerPredictions, answered: set[str], answered_count: int) -> tuple[bool, str]:
    """Whether the recorded ``Prediction`` events are exactly the predictions answered 2xx, and the report line."""
    same_ids = recorded.ids == answered
    ok = recorded.events == answered_count and same_ids
    line = (
        f"ledger check: {recorded.events:,} Prediction events, {answered_count:,} predictions answered 2xx "
        f"(warm-up included), ids {'equal' if same_ids else 'DIFFERENT'} => {'OK' if ok else 'MISMATCH'}"
    )
    return ok, line


# -- a deployed model behind a load server ----------------------------------------------


@dataclass(frozen=True)
class LoadTarget:
    """A ledger with the benchmark model deployed, and the server the load goes to."""

    settings: Settings
    database: str
    deployed: Deployed
    server: Server


@contextlib.contextmanager
def load_target(
    database_url: str, tmp_prefix: str, *, projector: bool, workers: int, **overrides: Any
) -> Iterator[LoadTarget]:
    """A fresh ledger (``serving_ledger``) where a setup server with its runner deploys the benchmark model,
    then a load server without a runner (``projector`` and ``workers`` as asked) until the block exits."""
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp, serving_ledger(database_url, **overrides) as settings:
        database = describe_database(settings)
        say("setting up: a server with its runner trains, registers, approves and deploys the model")
        with Server(settings, Path(tmp) / "setup.log") as server:
            deployed = deploy_model(server.base_url)
        say(f"model {deployed.model} v{deployed.version} deployed (training took {deployed.training_seconds:.1f} s)")
        with Server(settings, Path(tmp) / "load.log", projector=projector, runner=False, workers=workers) as server:
            say(f"load server: {server.command}")
            yield LoadTarget(settings, database, deployed, server)


# -- the load generators' side ----------------------------------------------------------


def encoded_rows(rows: list[dict[str, float]]) -> list[str]:
    """Each input record as compact JSON, encoded once (the load generators only splice them)."""
    return [json.dumps(row, separators=(",", ":")) for row in rows]


def single_body(encoded_row: str, request_id: str) -> bytes:
    """The body of ``POST /v1/models/{name}/predict``."""
    return f'{{"input":{encoded_row},"request_id":"{request_id}"}}'.encode()


def batch_body(encoded: list[str], start: int, count: int, prefix: str) -> bytes:
    """The body of ``predict:batch``: ``count`` records from ``start`` (cycling), request ids ``prefix-i``."""
    size = len(encoded)
    records = ",".join(f'{{"input":{encoded[(start + i) % size]},"request_id":"{prefix}-{i}"}}' for i in range(count))
    return f'{{"records":[{records}]}}'.encode()


class Connection:
    """One keep-alive HTTP/1.1 connection (``http.client``: far less client CPU per request than httpx)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send a POST; return the status and the body (raises OSError when the server is gone)."""
        try:
            self._connection.request("POST", path, body=body, headers=self._headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (the first is the state, field 3)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its live descendants (``/proc/<pid>/task/*/children``, recursively)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        with contextlib.suppress(OSError):  # it exited meanwhile
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending.extend(int(child) for child in (task / "children").read_text().split())
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants.

    Each live process counts its own user + system time plus that of the children
    it has reaped (``cutime`` + ``cstime``), so a worker that exits and is reaped
    moves its time to its parent and the sum never loses it. A descendant whose
    parent exits first is re-parented outside the tree and no longer counted.
    """
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):  # it exited meanwhile
            ticks += sum(int(value) for value in _stat_fields(member)[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by each local ``postgres`` process (none when the server is elsewhere)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if (entry / "comm").read_text().strip() == "postgres":
                found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used during a measured interval, by who."""

    server: float
    postgres: float
    clients: float


class CpuMeter:
    """CPU used by the server's processes, local PostgreSQL and this process between ``start`` and ``stop``.

    The server is its whole process tree (with ``serve --workers N``: the supervisor
    and its API workers; see :func:`tree_cpu_seconds`). A PostgreSQL process that
    exits in between is not counted (its use since ``start`` is unknown).
    """

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._server = 0.0
        self._postgres: dict[int, float] = {}
        self._clients = 0.0

    def start(self) -> None:
        """Take the starting figures."""
        self._server = tree_cpu_seconds(self._pid)
        self._postgres = postgres_cpu_seconds()
        self._clients = time.process_time()

    def stop(self) -> CpuUse:
        """CPU used since :meth:`start`."""
        postgres = sum(used - self._postgres.get(pid, 0.0) for pid, used in postgres_cpu_seconds().items())
        return CpuUse(tree_cpu_seconds(self._pid) - self._server, postgres, time.process_time() - self._clients)

    def processes(self) -> str:
        """What the server column measures, for the report: how many processes the server runs now."""
        count = len(process_tree(self._pid))
        return "one process" if count == 1 else f"{count} processes: the parent and its descendants, CPU summed"


# -- what both serving benches do around their load ------------------------------------------


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both serving benches take: the database, rounds, the projector and the API processes."""
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--with-projector", action="store_true", help="keep the projector in the server process")
    parser.add_argument(
        "--workers", type=int, default=CORES, help=f"API processes (serve --workers; default one per core: {CORES})"
    )


@dataclass
class TimedRound:
    """One timed round of requests, what both kinds of round hold: how long it took, the requests sent,
    their latencies, the ids answered and the errors; :func:`measure` adds the CPU and group commits."""

    seconds: float = 0.0
    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    transactions: int = 0
    cpu: CpuUse | None = None

    def latency_ms(self, share: float) -> float:
        """A percentile of the request latencies, in milliseconds."""
        return percentile(self.latencies, share) * 1000


R = TypeVar("R", bound=TimedRound)


@dataclass
class Measured(Generic[R]):
    """The warm-up, the timed rounds, and what the ledger holds afterwards."""

    warm: R
    rounds: list[R]
    recorded: LedgerPredictions
    processes: str


@dataclass
class SinglesRound(TimedRound):
    """One timed round of one-event requests: what was answered, how fast, and what failed."""

    @property
    def rate(self) -> float:
        """Requests answered 2xx per second."""
        return len(self.ids) / self.seconds if self.seconds else 0.0


def post_singles(
    base_url: str,
    api_key: str,
    path: str,
    body: Callable[[int, int], bytes],
    *,
    seconds: float,
    clients: int,
    ok: int,
    answer_id: str,
) -> SinglesRound:
    """``clients`` threads, each on a kept-alive connection, POSTing ``body(client, sent)`` to ``path`` for
    ``seconds``; an answer with status ``ok`` keeps its ``answer_id`` field, any other is an error."""
    lock = threading.Lock()
    result = SinglesRound()
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        connection = Connection(base_url, api_key)
        latencies: list[float] = []
        ids: list[str] = []
        errors: list[str] = []
        sent = 0
        try:
            while time.perf_counter() < deadline:
                payload = body(number, sent)
                sent += 1
                started = time.perf_counter()
                status, data = connection.post(path, payload)
                latencies.append(time.perf_counter() - started)
                if status == ok:
                    ids.append(json.loads(data)[answer_id])
                else:
                    errors.append(f"{status}: {data[:300]!r}")
        finally:
            connection.close()
            with lock:
                result.requests += sent
                result.latencies.extend(latencies)
                result.ids.extend(ids)
                result.errors.extend(errors)

    threads = [threading.Thread(target=client, args=(k,), name=f"bench-client-{k}") for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class RowsRound(TimedRound):
    """One timed round of many-row requests: what was answered, how fast, and what failed."""

    rows: int = 0

    @property
    def rate(self) -> float:
        """Rows answered 2xx per second."""
        return self.rows / self.seconds if self.seconds else 0.0


def post_rows(
    base_url: str, api_key: str, path: str, body: Callable[[int], bytes], *, requests: int, clients: int, ok: int
) -> RowsRound:
    """``requests`` POSTs of ``body(index)`` to ``path`` from ``clients`` threads, each on a kept-alive
    connection; an answer with status ``ok`` counts its ``predictions``' ids, any other is an error."""
    numbers = itertools.count()
    lock = threading.Lock()
    result = RowsRound()

    def client() -> None:
        connection = Connection(base_url, api_key)
        try:
            while (index := next(numbers)) < requests:
                payload = body(index)
                started = time.perf_counter()
                status, data = connection.post(path, payload)
                latency = time.perf_counter() - started
                answered = [p["prediction_id"] for p in json.loads(data)["predictions"]] if status == ok else []
                with lock:
                    result.requests += 1
                    result.latencies.append(latency)
                    if status == ok:
                        result.rows += len(answered)
                        result.ids.extend(answered)
                    else:
                        result.errors.append(f"{status}: {data[:300]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, name=f"bench-client-{k}") for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


def measure(
    target: LoadTarget,
    *,
    warm: Callable[[], R],
    timed: Callable[[int], R],
    repeats: int,
    progress: Callable[[R], str],
    topic: str = Prediction.Made.TOPIC,
) -> Measured[R]:
    """Warm up, then time ``repeats`` rounds, each with the CPU it used and its group commits, and read the ledger."""
    warmed = warm()
    if warmed.errors:
        raise SystemExit(f"warm-up failed: {warmed.errors[0]}")
    meter = CpuMeter(target.server.pid)
    rounds: list[R] = []
    for number in range(1, repeats + 1):
        before = ledger_position(target.settings)
        meter.start()
        found = timed(number)
        found.cpu = meter.stop()
        found.transactions = ledger_predictions(target.settings, before, topic=topic).transactions
        rounds.append(found)
        say(f"round {number}/{repeats}: {progress(found)}, {found.transactions} transactions, load {load_average()}")
    recorded = ledger_predictions(target.settings, 0, ledger_position(target.settings), topic=topic)
    return Measured(warmed, rounds, recorded, meter.processes())


def print_footer(
    measured: Measured[Any], database: str, load_before: str, load_after: str, answered_count: int
) -> bool:
    """The group commits, the ledger check, the machine and the load; True when the ledger holds every answer."""
    rounds = measured.rounds
    errors = [e for r in rounds for e in r.errors]
    answered = {pid for r in rounds for pid in r.ids} | set(measured.warm.ids)
    ledger_ok, ledger_line = ledger_check(measured.recorded, answered, answered_count)
    requests = sum(r.requests for r in rounds)
    print(
        f"group commit: {sum(r.transactions for r in rounds):,} transactions for {requests:,} requests; "
        f"{len(errors)} non-2xx answers" + (f" (first: {errors[0]})" if errors else "")
    )
    print(ledger_line)
    print(machine_line(database))
    print(f"load average (1/5/15 min): {load_before} before, {load_after} after")
    return ledger_ok and not errors
