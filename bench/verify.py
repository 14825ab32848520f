"""Benchmark: events per second checked by a full ``mlledger verify``.

Builds a ledger of N events (default 200,000; ``--events``) through the real
application with ``service.ops.workload.append_events(..., batch=500)``, projects it
into the transparency log (``services.runner.catch_up()``) and publishes a signed
checkpoint. Then it times

* ``service.ops.verify.verify_ledger(settings, anchors)`` in this process (the key
  chain, every hash and Ed25519 signature in worker processes, one per core,
  every aggregate's chain, the Merkle leaves and nodes and the checkpoint), and
* the real command line, ``python -m service verify``, once in a subprocess with
  MLLEDGER_DATABASE_URL / MLLEDGER_DATABASE_SCHEMA / MLLEDGER_DATA_DIR set, timed
  wall-clock including process start-up,

and prints events/s for both against the target (>= 25,000 events/s), with the
build time reported separately. Then it appends ``--since-events`` more events
(default 20,000), publishes a checkpoint and times
``verify_since_checkpoint`` from the state the full run produced (only the new
events, the state's consistency with the ledger and the log after it).

By default the ledger is the PostgreSQL at ``--database-url``
(postgresql://postgres@127.0.0.1:5432/test) in a new schema ``bench_<random>``
that is dropped at the end, also on failure or Ctrl-C. With ``--sqlite`` it is a
SQLite file in a temporary directory, removed at the end.

Run from the repository root::

    .venv/bin/python bench/verify.py
    .venv/bin/python bench/verify.py --events 50000 --sqlite

Building 200,000 events takes a few minutes; progress goes to stderr, the
results to stdout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import (
    DEFAULT_DATABASE_URL,
    Progress,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    ledger_env,
    load_average,
    machine_line,
    opened,
    verdict,
)
from domain.integrity.keys import raw_public_key
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.ops.verify_since import verify_since_checkpoint
from service.ops.workload import append_events
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TARGET = 25_000
BATCH = 500


def build(settings: Settings, count: int) -> tuple[bytes, list[tuple[str, float, int]]]:
    """Append ``count`` events, project them, publish a checkpoint.

    Returns the ledger's raw public key (the verification anchor) and the
    (step, seconds, events) of each build step.
    """
    steps: list[tuple[str, float, int]] = []
    with opened(settings) as services:
        anchor = raw_public_key(services.signer.public_key)
        progress = Progress("append", count)
        started = time.perf_counter()
        written = append_events(services.ledger, count, batch=BATCH, progress=progress)
        progress(written)
        progress.done()
        steps.append((f"append (batches of {BATCH})", time.perf_counter() - started, written))

        total = services.ledger.position()
        projected = 0
        project_progress = Progress("project", total)

        def on_batch(_name: str, batch_count: int) -> None:
            nonlocal projected
            projected += batch_count
            project_progress(projected)

        started = time.perf_counter()
        services.runner.catch_up(progress=on_batch)
        project_progress.done()
        names = ", ".join(p.name for p in services.projections)
        steps.append((f"project ({names})", time.perf_counter() - started, projected))

        started = time.perf_counter()
        checkpoint = publish_checkpoint_if_due(services, force=True)
        if checkpoint is None:
            raise SystemExit("no checkpoint was published")
        steps.append((f"checkpoint (tree size {checkpoint.tree_size:,})", time.perf_counter() - started, 0))
    return anchor, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--events", type=int, default=200_000, help="events in the ledger (default 200,000)")
    parser.add_argument("--workers", type=int, default=None, help="verify worker processes (default: every core)")
    parser.add_argument(
        "--since-events",
        type=int,
        default=20_000,
        help="events appended after the full run, then verified with --since-checkpoint (default 20,000; 0: skip)",
    )
    args = parser.parse_args(argv)
    install_sigterm_handler()

    with fresh_settings(args.database_url, args.sqlite) as settings:
        where = "SQLite (temp file)" if args.sqlite else f"PostgreSQL schema {settings.database_schema}"
        print(f"building a ledger of {args.events:,} events in {where}", file=sys.stderr, flush=True)
        build_started = time.perf_counter()
        anchor, steps = build(settings, args.events)
        build_seconds = time.perf_counter() - build_started
        database = describe_database(settings)

        print("verify_ledger in-process...", file=sys.stderr, flush=True)
        report = verify_ledger(settings, [anchor], workers=args.workers)
        if not report.ok:
            for finding in sorted(report.findings)[:10]:
                print(f"  finding: {finding.describe()}", file=sys.stderr)
            raise SystemExit(f"verification FAILED with {len(report.findings)} finding(s)")

        print("python -m service verify in a subprocess...", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "service", "verify"]
        if args.workers:
            command += ["--workers", str(args.workers)]
        started = time.perf_counter()
        cli = subprocess.run(command, env=ledger_env(settings), cwd=REPO, capture_output=True, text=True, check=False)
        cli_seconds = time.perf_counter() - started
        if cli.returncode != 0:
            sys.stderr.write(cli.stdout + cli.stderr)
            raise SystemExit(f"the CLI exited {cli.returncode}")
        since, since_seconds = None, 0.0
        if args.since_events and report.state is not None:
            print(f"{args.since_events:,} more events, then verify --since-checkpoint...", file=sys.stderr, flush=True)
            grown, _ = build(settings, args.since_events)
            started = time.perf_counter()
            since = verify_since_checkpoint(settings, report.state, [grown], workers=args.workers)
            since_seconds = time.perf_counter() - started
            if not since.ok:
                raise SystemExit(f"incremental verification FAILED: {since.findings[0].describe()}")
        load = load_average()

    backend = "SQLite" if args.sqlite else "PostgreSQL"
    workers = args.workers or os.cpu_count()
    print()
    print(
        f"ML Ledger verify benchmark on {backend}: {report.events:,} events in {report.aggregates:,} aggregates, "
        f"{report.leaves:,} log leaves, {report.checkpoints} checkpoint(s), {workers} workers"
    )
    print(f"build (not part of verification): {build_seconds:.1f} s")
    width = max(len(step) for step, _, _ in steps)
    for step, seconds, events in steps:
        rate_text = f" ({events / seconds:,.0f} events/s)" if events and seconds else ""
        print(f"  {step:<{width}} {seconds:>8.1f} s{rate_text}")
    header = f"{'verification':<54} | {'events':>8} | {'seconds':>8} | {'events/s':>9} | {'target':>10} | result"
    print(header)
    print("-" * len(header))
    rows = [
        ("verify_ledger() in-process", report.seconds),
        ("python -m service verify (wall-clock, incl. start-up)", cli_seconds),
    ]
    for label, seconds in rows:
        rate = report.events / seconds if seconds else 0.0
        print(
            f"{label:<54} | {report.events:>8,} | {seconds:>8.2f} | {rate:>9,.0f} | "
            f"{'>= ' + format(TARGET, ','):>10} | {verdict(rate, TARGET)}"
        )
    if since is not None:
        rate = since.events / since_seconds if since_seconds else 0.0
        label = f"verify --since-checkpoint (tree size {since.since:,} verified)"
        print(f"{label:<54} | {since.events:>8,} | {since_seconds:>8.2f} | {rate:>9,.0f} | {'-':>10} | ok")
    print(machine_line(database))
    print(f"load average at the end of the verification runs: {load}")
    print("CLI output:")
    for line in cli.stdout.splitlines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
