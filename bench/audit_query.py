"""Benchmark: audit-trail, lineage and champion-at-a-moment queries on a large
PostgreSQL ledger (default 1,000,000 events); target p95 < 50 ms for each.

The ledger holds realistic governance traffic, written through the real write
path (domain aggregates, sealing, chaining, ``Ledger.save`` in transactions of
about 500 events): principals with roles and signing keys, datasets, code,
pipelines, and about a thousand models, each with training runs (parameters,
metric batches, artifacts, an outcome), versions registered from some runs,
signed approvals (some rejections), policy changes and deployments (champion,
challenger, canary, rollback, stop and resume, retirement). Models are worked
on fifty at a time, so each model's events are spread over a stretch of the
log, as they would be in a busy ledger. Then the projections catch up, the
read-model tables are analyzed, and about 200 queries of each kind are timed
(one connection, as an API worker holds one; a warm-up first):

* audit events filtered by actor, by aggregate, by event type, by model, by a
  time window (first page of 100);
* a walk of 5 pages of 100 by cursor under a random filter (timed as a whole);
* the lineage of a random model version; who was champion at a random moment.

The schema is a fresh ``bench_<random>``, dropped at the end unless ``--keep``;
``--reuse-schema NAME`` measures a ledger kept earlier (it is never dropped).
The ledger key lives in ``$TMPDIR/mlledger-bench/<schema>``, so a kept ledger
can be reopened.

Run from the repository root::

    .venv/bin/python bench/audit_query.py
    .venv/bin/python bench/audit_query.py --events 100000 --keep
    .venv/bin/python bench/audit_query.py --reuse-schema bench_0123456789ab

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from bench.append import (
    DEFAULT_DATABASE_URL,
    Progress,
    describe_database,
    drop_schema,
    install_sigterm_handler,
    machine_line,
    percentile,
)
from domain.approval import FairnessEvidence, approval_statement, sign_statement
from domain.code import CodeVersion
from domain.dataset import Dataset
from domain.deployment import Deployment
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import format_timestamp, parse_timestamp
from domain.model import APPROVED, Model, ModelVersion
from domain.pipeline import Pipeline
from domain.principal import Principal, possession_message
from domain.run import Run
from projections import audit_queries, registry_queries
from service.bootstrap import Services, open_services
from service.settings import Settings
from service.store.persistence import POSTGRES_EVENTS_TABLE

TARGET_P95_MS = 50.0
MODELS_AT_ONCE = 50
RUNS_PER_MODEL = 20
METRIC_BATCHES = 40  # MetricsLogged events per run, 3 points each
VERSION_EVERY = 3  # every third run becomes a model version
EVENT_TYPES = [
    "MetricsLogged",
    "Requested",
    "Finished",
    "ArtifactRecorded",
    "ParamsLogged",
    "Registered",
    "ApprovalGranted",
    "ApprovalRejected",
    "VersionAdded",
    "ChampionSet",
    "ChallengerSet",
    "CanarySet",
    "RolledBack",
    "Stopped",
    "Resumed",
    "Retired",
    "PolicyChanged",
    "SigningKeyRegistered",
]


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- writing the ledger ----------------------------------------------------------------


class Writer:
    """Saves aggregates in transactions of about ``batch`` events."""

    def __init__(self, services: Services, target: int, batch: int) -> None:
        self.ledger = services.ledger
        self.target = target
        self.batch = batch
        self.pending: dict[int, Any] = {}
        self.written = 0
        self.progress = Progress("written", target)

    def add(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.pending[id(aggregate)] = aggregate
        if self.pending_events() >= self.batch:
            self.flush()

    def pending_events(self) -> int:
        return sum(len(a.pending_events) for a in self.pending.values())

    def flush(self) -> None:
        count = self.pending_events()
        if count:
            self.ledger.save(*self.pending.values())
            self.written += count
            self.progress(self.written)
        self.pending = {}

    @property
    def full(self) -> bool:
        return self.written + self.pending_events() >= self.target


# The benchmark writes aggregates directly and measures queries, not the fairness gate: it deploys as if no
# fairness report were due.
NO_REPORT_DUE = FairnessEvidence()


@dataclass
class Cast:
    """Who acts, and what they build on."""

    scientists: list[str]
    registrars: list[str]
    operators: list[str]
    approvers: list[tuple[str, Signer, str, str]]  # id, signer, key id, public key PEM
    series: dict[str, Dataset] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    pipelines: list[Pipeline] = field(default_factory=list)


def _people(writer: Writer, rng: random.Random) -> Cast:
    def person(name: str, roles: list[str]) -> Principal:
        principal = Principal(name=name, kind="user", roles=roles, actor="user:admin")
        writer.add(principal)
        return principal

    cast = Cast(
        scientists=[str(person(f"scientist-{i}", ["data_scientist"]).id) for i in range(60)],
        registrars=[str(person(f"registrar-{i}", ["data_scientist"]).id) for i in range(15)],
        operators=[str(person(f"operator-{i}", ["operator"]).id) for i in range(10)],
        approvers=[],
    )
    for i in range(12):
        approver = person(f"approver-{i}", ["approver"])
        approver.grant_role("auditor", actor="user:admin")
        signer = Signer.generate()
        pem = public_key_pem(signer.public_key)
        proof = signer.sign(possession_message(str(approver.id), signer.key_id))
        kid = approver.register_signing_key(pem, proof, actor=str(approver.id))
        cast.approvers.append((str(approver.id), signer, kid, pem))
    for i in range(20):
        author = rng.choice(cast.scientists)
        pipeline = Pipeline(name=f"pipeline-{i}", kind="python", actor=author)
        for spec_number in range(3):
            pipeline.add_spec({"entrypoint": f"train.p{i}:main", "time_limit_seconds": 600 + spec_number}, actor=author)
        cast.pipelines.append(pipeline)
        writer.add(pipeline)
    return cast


def _column_profile(column: int) -> dict[str, Any]:
    return {
        "name": f"f{column}",
        "count": 100_000,
        "missing": 0,
        "mean": 0.5 * column,
        "stddev": 1.0,
        "minimum": -3.0,
        "maximum": 3.0 + column,
    }


def _more_inputs(writer: Writer, cast: Cast, rng: random.Random, block: int) -> None:
    """New dataset and code versions, as a team would add between projects."""
    for i in range(4):
        name = f"dataset-{(block * 4 + i) % 40}"
        actor = rng.choice(cast.scientists)
        series = cast.series.setdefault(name, Dataset(name=name, actor=actor))
        version = series.add_version(
            digest=digest(f"{name}-{block}"),
            size=10_000 + block,
            format="parquet",
            schema=[{"name": f"f{c}", "type": "float"} for c in range(8)],
            row_count=100_000 + block,
            profile=[_column_profile(c) for c in range(8)],
            datasheet={"motivation": "benchmark", "pii_columns": ["f0"], "protected_attributes": ["f1"]},
            source=f"s3://bench/{name}/{block}",
            actor=actor,
        )
        cast.datasets.append(str(version.id))
        writer.add(series, version)
    for i in range(3):
        code = CodeVersion(
            repository="git@example.com:ml.git",
            commit=f"{block:04x}{i:03x}abc",
            archive_digest=digest(f"code-{block}-{i}"),
            entrypoint="train.main:run",
            actor=rng.choice(cast.scientists),
        )
        cast.code.append(str(code.id))
        writer.add(code)


@dataclass
class Project:
    """One model and its moving parts while it is worked on."""

    name: str
    scientist: str
    registrar: str
    operator: str
    model: Model | None = None
    deployment: Deployment | None = None
    champions: list[ModelVersion] = field(default_factory=list)


def _run(project: Project, step: int, cast: Cast, rng: random.Random) -> Run:
    pipeline = rng.choice(cast.pipelines)
    actor = project.scientist
    run = Run(
        name=f"{project.name}-run-{step}",
        mode="client",
        pipeline_id=str(pipeline.id),
        pipeline_version=len(pipeline.specs),
        spec_digest=pipeline.digests[-1],
        dataset_version_ids=rng.sample(cast.datasets[-40:], 2),
        code_version_id=rng.choice(cast.code[-30:]),
        params={"lr": round(rng.uniform(1e-4, 1e-1), 5), "epochs": METRIC_BATCHES},
        seed=rng.randrange(2**32),
        device="cpu",
        reproduces=None,
        actor=actor,
    )
    run.log_params({"batch_size": rng.choice([32, 64, 128]), "optimizer": "adam"}, actor=actor)
    for epoch in range(METRIC_BATCHES):
        loss = 1.0 / (epoch + 1) + rng.random() / 10
        run.log_metrics(
            [
                {"key": "loss", "value": loss, "step": epoch},
                {"key": "auc", "value": 1 - loss / 2, "step": epoch},
                {"key": "accuracy", "value": 1 - loss / 3, "step": epoch},
            ],
            actor=actor,
        )
    run.record_artifact("model.pt", digest(run.name), 1_000_000 + step, "application/octet-stream", actor=actor)
    run.record_artifact("metrics.json", digest(run.name + "m"), 2_000, "application/json", actor=actor)
    run.finish("failed" if rng.random() < 0.05 else "succeeded", None, actor=actor)
    return run


def _register(project: Project, run: Run, services: Services, cast: Cast, rng: random.Random) -> ModelVersion:
    actor = project.registrar
    if project.model is None:
        project.model = Model(name=project.name, policy={"required_approvals": 2}, actor=actor)
    model = project.model
    if rng.random() < 0.05:
        model.change_policy({"required_approvals": rng.choice([1, 2, 3])}, actor=actor)
    version = model.add_version(
        run=run,
        run_digest=services.ledger.run_digest(run),
        artifact_name="model.pt",
        input_schema=[{"name": f"f{c}", "type": "float"} for c in range(8)],
        actor=actor,
    )
    for index, (approver, signer, kid, pem) in enumerate(rng.sample(cast.approvers, 3)):
        if version.state(model.policy) != "pending":
            break
        decision = "reject" if index == 0 and rng.random() < 0.05 else "approve"
        statement = approval_statement(
            model_version_id=str(version.id),
            model_name=project.name,
            version=version.number,
            artifact_digest=version.artifact_digest,
            run_digest=version.run_digest,
            decision=decision,
            reason="metrics and fairness report reviewed",
            approver=approver,
            signed_at="2026-11-22T10:00:00Z",
        )
        version.decide(
            approver=approver,
            key_id=kid,
            public_key_pem=pem,
            statement=statement,
            signature=sign_statement(statement, signer.sign),
            policy=model.policy,
            fairness=NO_REPORT_DUE,
            actor=approver,
        )
    return version


def _deploy(project: Project, version: ModelVersion, rng: random.Random) -> None:
    assert project.model is not None
    policy, actor = project.model.policy, project.operator
    if version.state(policy) != APPROVED:
        return
    if project.deployment is None:
        project.deployment = Deployment(model_name=project.name, actor=actor)
    deployment = project.deployment
    if deployment.retired:
        return
    roll = rng.random()
    if deployment.champion is None or roll < 0.5:
        deployment.set_champion(version, policy, "better offline metrics", actor=actor, fairness=NO_REPORT_DUE)
        project.champions.append(version)
    elif roll < 0.7:
        deployment.set_challenger(version, policy, actor=actor, fairness=NO_REPORT_DUE)
    elif roll < 0.85:
        deployment.set_canary(version, round(rng.uniform(0.05, 0.3), 2), policy, actor=actor, fairness=NO_REPORT_DUE)
    else:
        deployment.set_champion(version, policy, "promoted", actor=actor, fairness=NO_REPORT_DUE)
        project.champions.append(version)
        previous = project.champions[-2] if len(project.champions) > 1 else None
        if previous is not None and previous.state(policy) == APPROVED:
            deployment.roll_back(previous, policy, "drift alarm", actor=actor, fairness=NO_REPORT_DUE)
    if rng.random() < 0.05:
        deployment.stop("incident", actor=actor)
        deployment.resume("incident resolved", actor=actor)


def build(services: Services, target: int, batch: int, seed: int) -> int:
    """Write about ``target`` events of governance traffic; return how many were written."""
    rng = random.Random(seed)
    writer = Writer(services, target, batch)
    cast = _people(writer, rng)
    block = 0
    while not writer.full:
        _more_inputs(writer, cast, rng, block)
        projects = [
            Project(
                f"model-{block * MODELS_AT_ONCE + i}",
                rng.choice(cast.scientists),
                rng.choice(cast.registrars),
                rng.choice(cast.operators),
            )
            for i in range(MODELS_AT_ONCE)
        ]
        for step in range(RUNS_PER_MODEL):
            if writer.full:
                break
            runs = [(project, _run(project, step, cast, rng)) for project in projects]
            for _, run in runs:
                writer.add(run)
            if step % VERSION_EVERY != VERSION_EVERY - 1:
                continue
            writer.flush()  # a version names its run's head hash, so the run must be stored first
            for project, run in runs:
                if run.status == "succeeded":
                    version = _register(project, run, services, cast, rng)
                    _deploy(project, version, rng)
                    writer.add(*(x for x in (version, project.model, project.deployment) if x is not None))
        for project in projects:
            if project.deployment is not None and rng.random() < 0.1:
                project.deployment.retire("replaced by a new product", actor=project.operator)
                writer.add(project.deployment)
        block += 1
    writer.flush()
    writer.progress.done()
    return writer.written


def catch_up(services: Services) -> None:
    """Bring every projection to the end of the log, with progress per projection."""
    total = services.ledger.position()
    for name in services.runner.projections:
        done = services.runner.position(name)
        progress = Progress(f"projecting {name}", total)

        def step(_name: str, count: int, progress: Progress = progress) -> None:
            nonlocal done
            done += count
            progress(done)

        started = time.perf_counter()
        services.runner.catch_up(name, step)
        progress.done()
        print(
            f"  {name}: at {services.runner.position(name):,} after {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def analyze(services: Services) -> None:
    """VACUUM ANALYZE the read models and the event log, as autovacuum would have done on a live server.

    Never analyzed, the event log of a freshly written ledger has no statistics: PostgreSQL then
    guesses that an aggregate has thousands of events and reads one with a parallel bitmap scan
    (tens of milliseconds at 10M events) instead of a primary-key probe.
    """
    tables = [t.name for p in services.projections for t in p.tables]
    if services.writer_engine.dialect.name == "postgresql":
        tables.append(POSTGRES_EVENTS_TABLE)
    with services.writer_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.exec_driver_sql(f'VACUUM ANALYZE "{table}"')


# -- measuring -------------------------------------------------------------------------


@dataclass
class Sample:
    """Values the random queries draw from."""

    actors: list[str]
    aggregates: list[str]
    models: list[str]
    versions: list[tuple[str, int]]
    first: str
    last: str
    spans: dict[str, tuple[str, str]]


def sample(conn: sa.Connection, rng: random.Random) -> Sample:
    top = conn.exec_driver_sql("SELECT max(notification_id) FROM audit_events").scalar_one()
    picks = [rng.randrange(1, top + 1) for _ in range(2000)]
    aggregates = (
        conn.execute(sa.text("SELECT aggregate_id FROM audit_events WHERE notification_id = ANY(:ids)"), {"ids": picks})
        .scalars()
        .all()
    )
    first, last = conn.exec_driver_sql("SELECT min(recorded_at), max(recorded_at) FROM audit_events").one()
    spans = {
        row[0]: (row[1], row[2])
        for row in conn.exec_driver_sql(
            "SELECT model_name, min(recorded_at), max(recorded_at) FROM reg_deployment_history GROUP BY model_name"
        )
    }
    return Sample(
        actors=list(conn.exec_driver_sql("SELECT id FROM reg_principals").scalars()),
        aggregates=list(aggregates),
        models=list(conn.exec_driver_sql("SELECT name FROM reg_models").scalars()),
        versions=[(r[0], int(r[1])) for r in conn.exec_driver_sql("SELECT model_name, number FROM reg_model_versions")],
        first=first,
        last=last,
        spans=spans,
    )


def between(rng: random.Random, start: str, end: str, fraction: float = 1.0) -> tuple[str, str]:
    """A random window inside [start, end] that is ``fraction`` of it long."""
    lo, hi = parse_timestamp(start), parse_timestamp(end)
    length = (hi - lo) * fraction
    begin = lo + (hi - lo - length) * rng.random()
    return format_timestamp(begin), format_timestamp(begin + length)


def queries(s: Sample, rng: random.Random) -> dict[str, Callable[[sa.Connection], int]]:
    """Each kind of query as a function of a connection returning how many rows it read."""

    def page(**filters: Any) -> Callable[[sa.Connection], int]:
        return lambda conn: len(audit_queries.audit_events(conn, limit=100, **filters).events)

    def walk(conn: sa.Connection) -> int:
        kind = rng.choice(["actor", "model", "event_type"])
        value = {
            "actor": lambda: rng.choice(s.actors),
            "model": lambda: rng.choice(s.models),
            "event_type": lambda: rng.choice(EVENT_TYPES),
        }[kind]()
        after, rows = None, 0
        for _ in range(5):
            result = audit_queries.audit_events(conn, limit=100, after=after, **{kind: value})
            rows += len(result.events)
            if result.next_after is None:
                break
            after = result.next_after
        return rows

    def window(conn: sa.Connection) -> int:
        since, until = between(rng, s.first, s.last, rng.choice([0.001, 0.01, 0.1]))
        return len(audit_queries.audit_events(conn, since=since, until=until, limit=100).events)

    def lineage(conn: sa.Connection) -> int:
        found = audit_queries.lineage(conn, *rng.choice(s.versions))
        assert found is not None and found.run is not None
        return 1 + len(found.approvals) + len(found.deployment_history) + len(found.run.final_metrics)

    def champion(conn: sa.Connection) -> int:
        model = rng.choice(list(s.spans))
        at, _ = between(rng, *s.spans[model], 0.0)
        return int(audit_queries.champion_at(conn, model, at).number is not None)

    return {
        "audit by actor (page of 100)": lambda conn: page(actor=rng.choice(s.actors))(conn),
        "audit by aggregate (page of 100)": lambda conn: page(aggregate_id=rng.choice(s.aggregates))(conn),
        "audit by event type (page of 100)": lambda conn: page(event_type=rng.choice(EVENT_TYPES))(conn),
        "audit by model (page of 100)": lambda conn: page(model=rng.choice(s.models))(conn),
        "audit by time window (page of 100)": window,
        "audit 5 pages deep by cursor (whole walk)": walk,
        "lineage of a model version": lineage,
        "champion at a moment": champion,
        "model versions of a model (registry)": lambda conn: len(
            registry_queries.model_versions(conn, rng.choice(s.models))
        ),
    }


@dataclass
class Timing:
    """Latencies of one kind of query."""

    name: str
    millis: list[float]
    rows: int


def measure(services: Services, count: int, seed: int) -> list[Timing]:
    rng = random.Random(seed)
    results = []
    with services.engine.connect() as conn:
        s = sample(conn, rng)
        for name, run in queries(s, rng).items():
            for _ in range(max(10, count // 10)):  # warm-up
                run(conn)
            conn.rollback()
            millis, rows = [], 0
            for _ in range(count):
                started = time.perf_counter()
                rows += run(conn)
                millis.append((time.perf_counter() - started) * 1000)
                conn.rollback()
            results.append(Timing(name, millis, rows))
            print(f"  measured {name}", file=sys.stderr, flush=True)
    return results


# -- main --------------------------------------------------------------------------------


@contextmanager
def ledger(database_url: str, reuse: str | None, keep: bool) -> Iterator[Services]:
    schema = reuse or f"bench_{secrets.token_hex(6)}"
    data_dir = Path(tempfile.gettempdir()) / "mlledger-bench" / schema
    settings = Settings(
        data_dir=data_dir, database_url=database_url, database_schema=schema, projection_batch_size=2000
    )
    print(f"schema {schema} (ledger key in {data_dir})", file=sys.stderr, flush=True)
    services = None
    try:
        services = open_services(settings, migrate=True)
        yield services
    finally:
        if services is not None:
            services.close()
        if reuse is None and not keep:
            drop_schema(database_url, schema)
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"dropped schema {schema}", file=sys.stderr)
        else:
            print(f"kept schema {schema}; measure it again with --reuse-schema {schema}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to write (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries of each kind (default 200)")
    parser.add_argument("--batch", type=int, default=500, help="events per write transaction")
    parser.add_argument("--reuse-schema", metavar="NAME", help="measure a kept ledger instead of building one")
    parser.add_argument("--keep", action="store_true", help="keep the new schema for later runs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    install_sigterm_handler()

    with ledger(args.database_url, args.reuse_schema, args.keep) as services:
        started = time.perf_counter()
        if services.ledger.position() < 1000:
            written = build(services, args.events, args.batch, args.seed)
            print(f"wrote {written:,} events in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        catch_up(services)
        analyze(services)
        print(f"projected and analyzed in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        events = services.ledger.position()
        results = measure(services, args.queries, args.seed)
        database = describe_database(services.settings)

    print()
    print(
        f"ML Ledger audit query benchmark: {events:,} events on PostgreSQL, {args.queries} timed queries each "
        f"(after a warm-up), one connection; target p95 < {TARGET_P95_MS:.0f} ms"
    )
    header = (
        f"{'query':<44} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | {'rows/query':>10} | result"
    )
    print(header)
    print("-" * len(header))
    for t in results:
        p50, p95, p99 = (percentile(t.millis, share) for share in (0.50, 0.95, 0.99))
        print(
            f"{t.name:<44} | {p50:>7.2f} | {p95:>7.2f} | {p99:>7.2f} | {max(t.millis):>7.2f} | "
            f"{t.rows / len(t.millis):>10.1f} | {'ok' if p95 < TARGET_P95_MS else 'MISSED'}"
        )
    print(f"mean of all queries: {statistics.fmean(m for t in results for m in t.millis):.2f} ms")
    print(machine_line(database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
