"""Benchmark: predictions made by another serving stack, logged as signed, durable events per second.

The same server and ledger as ``bench/predict_batch.py`` (``bench/serving_setup.py``:
a ``GradientBoostingClassifier`` over 30 numeric features trained by the
server's runner, approved by two signers, deployed as champion; then a load
server without a runner, ``--workers`` API processes). Load generators send
``POST /v1/models/{name}/predictions:log`` with ``--rows-per-request`` (default
1,000) records, each with its input, output, two reason codes, the moment it
was made (after the deployment) and its own request id. Every answered record
went the whole way: the deployment history checked for the version, role and
moment, schema check, a ``Prediction.Logged`` event, canonical JSON, sha256,
Ed25519 signature, and a committed PostgreSQL transaction before the answer
left (the serving path's group commit). No model runs.

``--repeats`` (default 3) rounds follow ``--warmup`` (default 2) untimed
requests; the verdict is the median round's. Afterwards the ledger is checked:
the ``Prediction.Logged`` events must be exactly the predictions answered 2xx.

Run from the repository root::

    .venv/bin/python bench/predictions_log.py
    .venv/bin/python bench/predictions_log.py --workers 1 --clients 2 --requests 20

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import install_sigterm_handler, load_average, percentile
from bench.serving_setup import (
    FEATURES,
    CpuUse,
    Deployed,
    RowsRound,
    add_serving_arguments,
    input_rows,
    load_target,
    measure,
    post_rows,
    print_footer,
)
from domain.prediction import Prediction

TARGET_ROWS_PER_SECOND = 10_000


def encoded_records(deployed: Deployed, count: int) -> list[str]:
    """Each record without its request id, as compact JSON up to the closing brace (spliced by the senders)."""
    rows = input_rows(count)
    names = deployed.features
    out = []
    for k, row in enumerate(rows):
        probability = round((k % 100) / 100, 2)
        record = {
            "input": row,
            "output": {"label": int(probability >= 0.5), "probability": probability},
            "reason_codes": [
                {"feature": names[k % len(names)], "contribution": 0.25},
                {"feature": names[(k + 1) % len(names)], "contribution": -0.125},
            ],
            "latency_ms": 2.5,
        }
        out.append(json.dumps(record, separators=(",", ":"))[:-1])
    return out


def log_body(deployed: Deployed, encoded: list[str], start: int, count: int, prefix: str, moment: str) -> bytes:
    """``count`` records from ``start`` (cycling), made at ``moment``, request ids ``prefix-i``."""
    size = len(encoded)
    records = ",".join(
        f'{encoded[(start + i) % size]},"predicted_at":"{moment}","request_id":"{prefix}-{i}"}}' for i in range(count)
    )
    return f'{{"version":{deployed.version},"role":"champion","records":[{records}]}}'.encode()


def send_logs(
    base_url: str, deployed: Deployed, encoded: list[str], *, requests: int, rows: int, clients: int, prefix: str
) -> RowsRound:
    """``requests`` log requests from ``clients`` threads; every answered prediction id is kept."""
    moment = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return post_rows(
        base_url,
        deployed.predictor_key,
        f"/v1/models/{deployed.model}/predictions:log",
        lambda index: log_body(deployed, encoded, index * rows, rows, f"{prefix}-{index}", moment),
        requests=requests,
        clients=clients,
        ok=201,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_serving_arguments(parser)
    parser.add_argument("--rows-per-request", type=int, default=1_000, help="records per request (default 1000)")
    parser.add_argument("--requests", type=int, default=40, help="requests per round (default 40)")
    parser.add_argument(
        "--clients", type=int, default=None, help="concurrent load generators (default two per API process)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests first (default 2)")
    args = parser.parse_args(argv)
    if args.clients is None:
        args.clients = 2 * args.workers

    install_sigterm_handler()
    load_before = load_average()
    with load_target(
        args.database_url,
        "mlledger-predictions-log-",
        projector=args.with_projector,
        workers=args.workers,
        max_batch_rows=max(10_000, args.rows_per_request),
    ) as target:
        url, deployed, rows = target.server.base_url, target.deployed, args.rows_per_request
        encoded = encoded_records(deployed, 5_000)
        measured = measure(
            target,
            warm=lambda: send_logs(url, deployed, encoded, requests=args.warmup, rows=rows, clients=1, prefix="warm"),
            timed=lambda number: send_logs(
                url, deployed, encoded, requests=args.requests, rows=rows, clients=args.clients, prefix=f"r{number}"
            ),
            repeats=args.repeats,
            progress=lambda found: f"{found.rows:,} rows in {found.seconds:.2f} s = {found.rate:,.0f} rows/s",
            topic=Prediction.Logged.TOPIC,
        )
    load_after = load_average()

    rounds = measured.rounds
    rates = [r.rate for r in rounds]
    best, typical = max(rates), statistics.median(rates)
    print()
    print(
        f"ML Ledger: predictions served elsewhere, logged through predictions:log "
        f"({args.rows_per_request:,} rows per request, {args.clients} concurrent clients)"
    )
    print(
        f"{FEATURES} numeric features, output and two reason codes per row; deployment history, schema and "
        "reason codes checked; one signed Prediction.Logged event per row"
    )
    print(f"server: `{target.server.command}` ({measured.processes}); PostgreSQL commit before every answer")
    header = (
        f"{'#':>2} | {'requests':>8} | {'rows':>7} | {'seconds':>7} | {'rows/s':>7} | "
        f"{'req p50 ms':>10} | {'p95 ms':>7} | {'txns':>5} | "
        f"{'CPU ms/1000 rows: server':>24} | {'postgres':>8} | {'clients':>7}"
    )
    print(header)
    print("-" * len(header))
    for number, found in enumerate(rounds, start=1):
        cpu = found.cpu or CpuUse(0, 0, 0)
        per = 1_000_000 / found.rows if found.rows else 0.0
        p50, p95 = (percentile(found.latencies, share) * 1000 for share in (0.50, 0.95))
        print(
            f"{number:>2} | {found.requests:>8} | {found.rows:>7,} | {found.seconds:>7.2f} | {found.rate:>7,.0f} | "
            f"{p50:>10.0f} | {p95:>7.0f} | {found.transactions:>5} | "
            f"{cpu.server * per:>24.0f} | {cpu.postgres * per:>8.0f} | {cpu.clients * per:>7.0f}"
        )
    print("-" * len(header))
    print(
        f"rows/s: best {best:,.0f}, median {typical:,.0f} (target >= {TARGET_ROWS_PER_SECOND:,}) "
        f"=> {'PASS' if typical >= TARGET_ROWS_PER_SECOND else 'MISSED'} (median round)"
    )
    answered = sum(r.rows for r in rounds) + measured.warm.rows
    return 0 if print_footer(measured, target.database, load_before, load_after, answered) else 1


if __name__ == "__main__":
    sys.exit(main())
