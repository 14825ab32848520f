"""Generate a large, realistic ledger on PostgreSQL (``--events N``), every event genuinely signed and chained.

What it writes, all through the ledger's own write path (domain aggregates or
the application's commands, sealed, hash-chained and signed with the ledger key
by ``Ledger.save`` in transactions of ``--batch`` events):

1. governance traffic, about ``--governance-share`` of the events
   (``bench/audit_query.py``'s generator): principals with roles and signing
   keys, dataset and code versions, pipelines, about a thousand models each with
   training runs (parameters, metric batches, artifacts, outcomes), versions,
   approvals signed by the approvers' own Ed25519 keys (some rejections),
   policy changes and deployments (champion, challenger, canary, rollback, stop
   and resume, retirement);
2. ``--serving-models`` served models, each recorded through the application's
   commands (dataset, run, version, two signed approvals, champion);
3. the rest as predictions of those models (the first gets ``--headline-share``
   of them, the rest share the remainder), one in ``--subject-every`` for an
   identified data subject (a ``Subject`` record, the input kept only as
   ciphertext), written by ``--writers`` processes at once.

Then the projector's work: every read model is brought up to date (the
transparency log publishing a checkpoint every 1,000 leaves, as the default
setting does) and the read-model tables are analyzed. Progress goes to stderr.

The ledger is kept: schema ``--schema`` (default a new ``bench_<random>``), its
ledger key under ``$TMPDIR/mlledger-bench/<schema>``, the admin API key
``bench.serving_setup.ADMIN_KEY``; ``bench/at_scale.py --schema NAME`` measures
it, ``--drop NAME`` removes it.

Run from the repository root::

    .venv/bin/python bench/generate_ledger.py --events 1000000
    .venv/bin/python bench/generate_ledger.py --drop bench_0123456789ab
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import DEFAULT_DATABASE_URL, Progress, drop_schema, install_sigterm_handler, load_average, say
from bench.audit_query import analyze, build
from bench.serving_setup import ADMIN_KEY, REPO, server_env
from domain.approval import approval_statement, sign_statement
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import format_timestamp
from domain.prediction import Prediction
from domain.principal import possession_message
from domain.subject import Subject
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due
from service.settings import Settings

FEATURES = [f"x{i}" for i in range(8)]
ACTOR = "bench:generator"


def ledger_settings(database_url: str, schema: str) -> Settings:
    """The settings of a generated ledger: its schema, its key under ``$TMPDIR/mlledger-bench/<schema>``."""
    return Settings(
        data_dir=Path(tempfile.gettempdir()) / "mlledger-bench" / schema,
        database_url=database_url,
        database_schema=schema,
        admin_api_key=ADMIN_KEY,
        projection_batch_size=2000,
    )


def serving_model_name(index: int) -> str:
    return "credit" if index == 0 else f"serving-{index}"


@dataclass(frozen=True)
class Served:
    """A model recorded and deployed as champion: its name and its version's id."""

    name: str
    version_id: str


def record_served_model(services: Services, name: str) -> Served:
    """A client-reported run, version 1, two approvals signed by the approvers' own keys, champion."""
    ledger = services.ledger
    blob = services.blobs.put_bytes(f"training data of {name}".encode())
    dataset = ledger.register_dataset_version(
        name=f"{name}-data",
        digest=blob.digest,
        size=blob.size,
        format="csv",
        schema=[{"name": f, "type": "float"} for f in FEATURES],
        row_count=100_000,
        datasheet={"motivation": "scale benchmark", "protected_attributes": ["x0"]},
        source="bench",
        actor="scientist",
    )
    run = ledger.start_run(
        name=f"{name}-training",
        mode="client",
        pipeline=None,
        pipeline_version=None,
        dataset_version_ids=[dataset.id],
        code_version_id=None,
        params={"depth": 3},
        seed=1,
        device="cpu",
        actor="scientist",
    )
    ledger.log_metrics(run.id, [{"key": "auc", "value": 0.8 + s / 100, "step": s} for s in range(5)], "scientist")
    artifact = services.blobs.put_bytes(f"model bytes of {name}".encode())
    ledger.record_artifact(run.id, "model.pkl", artifact.digest, artifact.size, "application/octet-stream", "scientist")
    ledger.finish_run(run.id, "succeeded", None, "scientist")
    ledger.register_model_version(
        model_name=name,
        run_id=run.id,
        artifact_name="model.pkl",
        input_schema=[{"name": f, "type": "float"} for f in FEATURES],
        policy={"min_impact_ratio": None},  # a client-reported run gets no fairness report
        actor="scientist",
    )
    version = ledger.model_version(name, 1)
    for approver in (f"{name}-approver-1", f"{name}-approver-2"):
        principal = ledger.register_principal(approver, "user", ["approver"], actor=ACTOR)
        signer = Signer.generate()
        proof = signer.sign(possession_message(principal.id, signer.key_id))
        key_id, _ = ledger.register_signing_key(
            principal.id, public_key_pem(signer.public_key), proof, actor=principal.id
        )
        statement = approval_statement(
            model_version_id=str(version.id),
            model_name=name,
            version=1,
            artifact_digest=version.artifact_digest,
            run_digest=version.run_digest,
            decision="approve",
            reason="validated for serving",
            approver=principal.id,
            signed_at=format_timestamp(datetime.now(UTC)),
        )
        ledger.decide(
            model_name=name,
            number=1,
            approver_id=principal.id,
            key_id=key_id,
            statement=statement,
            signature=sign_statement(statement, signer.sign),
            actor=principal.id,
        )
    ledger.deploy(model_name=name, action="champion", number=1, share=None, reason="serving", actor="operator")
    return Served(name, str(version.id))


def prediction_events(model: Served, index: int, subject_every: int) -> list[object]:
    """One served prediction (with its ``Subject`` record when it is for an identified person)."""
    row = {f: round((index * 7919 + i * 104729) % 1000 / 10, 1) for i, f in enumerate(FEATURES)}
    subject = f"subject-{index % 1_000_003}" if subject_every and index % subject_every == 0 else None
    made = Prediction.make(
        model_name=model.name,
        model_version_id=model.version_id,
        number=1,
        role="champion",
        request_id=f"{model.name}-request-{index}",
        shadow_of=None,
        subject_id=subject,
        input_digest="sha256:" + hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest(),
        input=None if subject else row,
        input_ciphertext=base64.b64encode(os.urandom(96)).decode() if subject else None,
        input_key_id=f"key-{index}" if subject else None,
        output={"label": index % 2, "probability": (index % 100) / 100},
        reason_codes=[{"feature": f, "contribution": 0.1} for f in FEATURES[:3]],
        explanation=None,
        latency_ms=1.5,
        actor="predictor",
    )
    return [made, Subject(subject_id=subject, key_id=f"key-{index}", actor="vault")] if subject else [made]


@dataclass(frozen=True)
class Share:
    """What one writer process appends: predictions ``start, start + step, ...`` below ``stop``."""

    settings: Settings
    models: list[Served]
    headline_share: float
    start: int
    stop: int
    step: int
    batch: int
    subject_every: int


def _model_for(models: list[Served], index: int, headline_share: float) -> Served:
    """The headline model for ``headline_share`` of the indexes (spread evenly), the others in turn."""
    if len(models) == 1 or (index * headline_share) % 1 < headline_share:
        return models[0]
    return models[1 + index % (len(models) - 1)]


def write_share(share: Share) -> int:
    """Append one writer's predictions (in its own process, with its own connections); return the events."""
    services = open_services(share.settings)
    written = 0
    progress = Progress(f"predictions (writer {share.start})", len(range(share.start, share.stop, share.step)), 10.0)
    try:
        pending: list[object] = []
        done = 0
        for index in range(share.start, share.stop, share.step):
            pending += prediction_events(
                _model_for(share.models, index, share.headline_share), index, share.subject_every
            )
            done += 1
            if len(pending) >= share.batch:
                services.ledger.save(*pending)
                written += len(pending)
                pending = []
                progress(done)
        if pending:
            services.ledger.save(*pending)
            written += len(pending)
        progress(done)
    finally:
        services.close()
    return written


def predictions_for(events: int, subject_every: int) -> int:
    """How many predictions make ``events`` events with their subjects (one extra event each Nth)."""
    per = 1 + (1 / subject_every if subject_every else 0)
    return int(events / per)


def project(services: Services, settings: Settings, processes: int = 2) -> None:
    """The projector's work: the transparency log with a checkpoint every 1,000 leaves, then every read model.

    With ``processes`` above 1 the other read models are projected at the same time by
    keyless ``mlledger project --only ...`` processes (the audit trail in one, the rest
    shared among the others), as a deployment runs several projectors to use more cores.
    """
    total = services.ledger.position()
    others = [name for name in services.runner.projections if name != "transparency_log"]
    helpers: list[subprocess.Popen[bytes]] = []
    if processes > 1:
        groups: list[list[str]] = [[] for _ in range(processes - 1)]
        ordered = sorted(others, key=lambda name: name != "audit_trail")  # the slowest gets a process alone
        for index, name in enumerate(ordered):
            groups[min(index, len(groups) - 1)].append(name)
        env = server_env(settings)
        for group in filter(None, groups):
            say(f"projecting {', '.join(group)} in a keyless process of its own")
            only = [arg for name in group for arg in ("--only", name)]
            helpers.append(subprocess.Popen([sys.executable, "-m", "service", "project", *only], env=env, cwd=REPO))
        others = []
    log = services.runner.projections["transparency_log"]
    progress = Progress("projecting transparency_log", total, 10.0)
    while services.runner.run_batch(log):
        publish_checkpoint_if_due(services)
        progress(services.runner.position("transparency_log"))
    publish_checkpoint_if_due(services)
    progress.done()
    for name in others:
        progress = Progress(f"projecting {name}", total, 10.0)
        started = services.runner.position(name)
        done = started

        def step(_name: str, count: int, progress: Progress = progress) -> None:
            nonlocal done
            done += count
            progress(done)

        services.runner.catch_up(name, step)
        progress.done()
    failed = [helper.args for helper in helpers if helper.wait() != 0]
    if failed:
        raise RuntimeError(f"a projector process failed: {failed}")
    analyze(services)


@dataclass(frozen=True)
class Generated:
    """What the generator wrote and how long each part took."""

    schema: str
    events: int
    governance_events: int
    predictions_events: int
    governance_seconds: float
    predictions_seconds: float
    projection_seconds: float


def generate(
    settings: Settings,
    events: int,
    *,
    writers: int = 2,
    batch: int = 1000,
    governance_share: float = 0.1,
    serving_models: int = 4,
    headline_share: float = 0.5,
    subject_every: int = 20,
    seed: int = 7,
    projectors: int = 2,
) -> Generated:
    """Write about ``events`` events into the (empty) ledger of ``settings`` and project them."""
    services = open_services(settings, migrate=True)
    try:
        started = time.perf_counter()
        say(f"governance traffic: about {int(events * governance_share):,} events")
        governance = build(services, max(2_000, int(events * governance_share)), 500, seed) if governance_share else 0
        models = [record_served_model(services, serving_model_name(i)) for i in range(serving_models)]
        governance_seconds = time.perf_counter() - started
        before = services.ledger.position()
    finally:
        services.close()
    count = predictions_for(max(0, events - before), subject_every)
    say(f"predictions: {count:,} over {serving_models} models, {writers} writer processes, load {load_average()}")
    started = time.perf_counter()
    shares = [Share(settings, models, headline_share, w, count, writers, batch, subject_every) for w in range(writers)]
    if writers == 1:
        predictions = write_share(shares[0])
    else:
        with multiprocessing.get_context("spawn").Pool(writers) as pool:
            predictions = sum(pool.map(write_share, shares))
    predictions_seconds = time.perf_counter() - started
    services = open_services(settings)
    try:
        started = time.perf_counter()
        project(services, settings, projectors)
        projection_seconds = time.perf_counter() - started
        total = services.ledger.position()
    finally:
        services.close()
    return Generated(
        settings.database_schema,
        total,
        governance,
        predictions,
        governance_seconds,
        predictions_seconds,
        projection_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="about how many events (default 1,000,000)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--schema", help="the schema to create (default bench_<random>)")
    parser.add_argument("--writers", type=int, default=2, help="prediction writer processes (default 2)")
    parser.add_argument("--batch", type=int, default=1000, help="events per write transaction (default 1000)")
    parser.add_argument("--governance-share", type=float, default=0.1, help="share of governance events (0.1)")
    parser.add_argument("--serving-models", type=int, default=4, help="models serving predictions (default 4)")
    parser.add_argument("--headline-share", type=float, default=0.5, help="share of predictions for 'credit'")
    parser.add_argument("--subject-every", type=int, default=20, help="one prediction in N has a data subject")
    parser.add_argument(
        "--projectors", type=int, default=2, help="projector processes once written (default 2: the log, the rest)"
    )
    parser.add_argument("--drop", metavar="SCHEMA", help="drop a generated ledger (schema and key) and exit")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    if args.drop:
        drop_schema(args.database_url, args.drop)
        shutil.rmtree(ledger_settings(args.database_url, args.drop).data_dir, ignore_errors=True)
        say(f"dropped {args.drop}")
        return 0
    schema = args.schema or f"bench_{secrets.token_hex(6)}"
    settings = ledger_settings(args.database_url, schema)
    say(f"schema {schema} (ledger key in {settings.data_dir}); load {load_average()}")
    started = time.perf_counter()
    result = generate(
        settings,
        args.events,
        writers=args.writers,
        projectors=args.projectors,
        batch=args.batch,
        governance_share=args.governance_share,
        serving_models=args.serving_models,
        headline_share=args.headline_share,
        subject_every=args.subject_every,
    )
    elapsed = time.perf_counter() - started
    written = result.governance_events + result.predictions_events
    print(f"schema {result.schema}: {result.events:,} events in the ledger")
    print(
        f"  governance {result.governance_events:,} events in {result.governance_seconds:.0f} s; "
        f"predictions {result.predictions_events:,} events in {result.predictions_seconds:.0f} s "
        f"({result.predictions_events / max(result.predictions_seconds, 1e-9):,.0f}/s, {args.writers} writers)"
    )
    print(
        f"  projected (every read model, checkpoints every 1,000 leaves) in {result.projection_seconds:.0f} s; "
        f"total {elapsed:.0f} s ({written / max(elapsed, 1e-9):,.0f} events/s end to end)"
    )
    print(f"  load average at the end: {load_average()}")
    print(f"measure it: .venv/bin/python bench/at_scale.py --schema {result.schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
