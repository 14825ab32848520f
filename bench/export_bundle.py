"""Benchmark: export bundle and offline verification of a model with 100,000 prediction events.

A model is recorded through the ledger application (dataset, client-reported
run with metrics and artifact, model version, two signed approvals, champion
deployment), then ``--predictions`` prediction events are appended in batches of
500 through the real write path (``Prediction.make``, sealed, chained, signed),
one in ``--subject-every`` for an identified data subject (encrypted input and
a ``Subject`` record). The transparency log is projected with a checkpoint every
1,000 leaves (the default setting), every other read model is brought up to
date, and then two things are timed:

* ``export``: ``mlledger export`` of the whole model (every prediction), from
  scope selection to the written zip, the export recorded in the ledger;
* ``verify``: ``verify_bundle.py`` on that zip with every core (zip checks, key
  chain, every hash and signature, chains, approvals, checkpoints, the
  inclusion proof of every event, consistency proofs, document digests).

Target: verify >= 20,000 events/s. By default the ledger is the PostgreSQL at
``--database-url`` in a fresh schema ``bench_<random>``, dropped at the end;
``--sqlite`` uses a temporary SQLite file.

Run from the repository root::

    .venv/bin/python bench/export_bundle.py
    .venv/bin/python bench/export_bundle.py --predictions 20000 --sqlite
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import (
    DEFAULT_DATABASE_URL,
    Progress,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    machine_line,
    opened,
    verdict,
)
from domain.approval import approval_statement, sign_statement
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import format_timestamp
from domain.prediction import Prediction
from domain.principal import possession_message
from domain.subject import Subject
from service.bootstrap import Services
from service.exports.bundle import export_bundle
from service.exports.scope import ExportRequest
from service.exports.verify_bundle import verify_bundle
from service.ops.projector import publish_checkpoint_if_due

MODEL = "bench-credit"
TARGET = 20_000
BATCH = 500
FEATURES = [f"x{i}" for i in range(8)]


def record_model(services: Services) -> tuple[str, int]:
    """A trained, approved, deployed model; returns its version id and number."""
    ledger = services.ledger
    blob = services.blobs.put_bytes(b"bench training data")
    dataset = ledger.register_dataset_version(
        name="bench-data",
        digest=blob.digest,
        size=blob.size,
        format="csv",
        schema=[{"name": f, "type": "float"} for f in FEATURES],
        row_count=1_000,
        datasheet={"motivation": "benchmark", "protected_attributes": ["x0"]},
        source="bench",
        actor="scientist",
    )
    run = ledger.start_run(
        name="bench-run",
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
    artifact = services.blobs.put_bytes(b"bench model bytes")
    ledger.record_artifact(run.id, "model.pkl", artifact.digest, artifact.size, "application/octet-stream", "scientist")
    ledger.finish_run(run.id, "succeeded", None, "scientist")
    ledger.register_model_version(
        model_name=MODEL,
        run_id=run.id,
        artifact_name="model.pkl",
        input_schema=[{"name": f, "type": "float"} for f in FEATURES],
        policy={"min_impact_ratio": None},  # a client-reported run gets no fairness report
        actor="scientist",
    )
    version = ledger.model_version(MODEL, 1)
    for name in ("approver-1", "approver-2"):
        principal = ledger.register_principal(name, "user", ["approver"], actor="admin")
        signer = Signer.generate()
        proof = signer.sign(possession_message(principal.id, signer.key_id))
        key_id, _ = ledger.register_signing_key(
            principal.id, public_key_pem(signer.public_key), proof, actor=principal.id
        )
        statement = approval_statement(
            model_version_id=str(version.id),
            model_name=MODEL,
            version=1,
            artifact_digest=version.artifact_digest,
            run_digest=version.run_digest,
            decision="approve",
            reason="benchmark review",
            approver=principal.id,
            signed_at=format_timestamp(datetime.now(UTC)),
        )
        ledger.decide(
            model_name=MODEL,
            number=1,
            approver_id=principal.id,
            key_id=key_id,
            statement=statement,
            signature=sign_statement(statement, signer.sign),
            actor=principal.id,
        )
    ledger.deploy(model_name=MODEL, action="champion", number=1, share=None, reason="bench", actor="operator")
    return str(version.id), 1


def append_predictions(services: Services, version_id: str, count: int, subject_every: int) -> float:
    """Append ``count`` prediction events in batches; return the seconds it took."""
    progress = Progress("predictions", count)
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        batch: list[object] = []
        for index in range(start, min(start + BATCH, count)):
            row = {f: round((index * 7919 + i * 104729) % 1000 / 10, 1) for i, f in enumerate(FEATURES)}
            subject = f"subject-{index}" if subject_every and index % subject_every == 0 else None
            batch.append(
                Prediction.make(
                    model_name=MODEL,
                    model_version_id=version_id,
                    number=1,
                    role="champion",
                    request_id=f"request-{index}",
                    shadow_of=None,
                    subject_id=subject,
                    input_digest="sha256:" + hashlib.sha256(str(row).encode()).hexdigest(),
                    input=None if subject else row,
                    input_ciphertext=base64.b64encode(os.urandom(96)).decode() if subject else None,
                    input_key_id=f"key-{index}" if subject else None,
                    output={"label": index % 2, "probability": (index % 100) / 100},
                    reason_codes=[{"feature": f, "contribution": 0.1} for f in FEATURES[:3]],
                    explanation=None,
                    latency_ms=1.5,
                    actor="predictor",
                )
            )
            if subject is not None:
                batch.append(Subject(subject_id=subject, key_id=f"key-{index}", actor="vault"))
        services.ledger.save(*batch)
        progress(min(start + BATCH, count))
    progress.done()
    return time.perf_counter() - started


def project(services: Services) -> float:
    """Every read model up to date; the transparency log with a checkpoint every 1,000 leaves."""
    started = time.perf_counter()
    log = services.runner.projections["transparency_log"]
    while services.runner.run_batch(log):
        publish_checkpoint_if_due(services)
    services.runner.catch_up()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table of figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--subject-every", type=int, default=20, help="one prediction in N has a data subject")
    parser.add_argument("--workers", type=int, default=None, help="verifier processes (default: every core)")
    parser.add_argument("--database-url", default=os.environ.get("MLLEDGER_TEST_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    with fresh_settings(args.database_url, args.sqlite) as settings, opened(settings) as services:
        print(machine_line(describe_database(settings)))
        version_id, _ = record_model(services)
        appended = append_predictions(services, version_id, args.predictions, args.subject_every)
        projected = project(services)
        print(
            f"setup: {args.predictions:,} predictions appended in {appended:.1f} s, projected in {projected:.1f} s",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory(prefix="mlledger-bundle-") as tmp:
            bundle = Path(tmp) / "bundle.zip"
            result = export_bundle(services, ExportRequest.of(MODEL), actor="bench", destination=bundle)
            started = time.perf_counter()
            summary = verify_bundle(bundle, workers=args.workers)
            verified = time.perf_counter() - started
            started = time.perf_counter()
            verify_bundle(bundle, workers=args.workers, crypto_only=True)
            verified_openssl = time.perf_counter() - started
    export_rate = result.events / result.seconds
    verify_rate = summary.events / verified
    openssl_rate = summary.events / verified_openssl
    header = f"{'step':<8} | {'events':>8} | {'bundle MB':>9} | {'seconds':>8} | {'events/s':>9} | {'target':>10}"
    print(header + " | result")
    print(
        f"{'export':<8} | {result.events:>8,} | {result.size / 1e6:>9.1f} | {result.seconds:>8.2f} | "
        f"{export_rate:>9,.0f} | {'-':>10} | -"
    )
    print(
        f"{'verify':<8} | {summary.events:>8,} | {result.size / 1e6:>9.1f} | {verified:>8.2f} | "
        f"{verify_rate:>9,.0f} | {'>= ' + format(TARGET, ','):>10} | {verdict(verify_rate, TARGET)}"
    )
    print(
        f"{'verify*':<8} | {summary.events:>8,} | {result.size / 1e6:>9.1f} | {verified_openssl:>8.2f} | "
        f"{openssl_rate:>9,.0f} | {'>= ' + format(TARGET, ','):>10} | {verdict(openssl_rate, TARGET)}"
    )
    print(
        f"verify: event signatures by {summary.ed25519}; verify*: by OpenSSL only (--crypto-only, a bare "
        f"virtualenv with just cryptography); {summary.workers} worker(s); {len(summary.checkpoints)} checkpoints, "
        f"{summary.proof_nodes} proof nodes, {summary.files} signed documents"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
