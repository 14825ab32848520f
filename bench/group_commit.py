"""Benchmark: single-event writes per second through the HTTP API, with concurrent clients.

A real server (``python -m service serve``, by default one API process per core,
``--workers``; projector and runner off) on a fresh PostgreSQL schema.
``--clients`` (default 16) load generators, each with one keep-alive HTTP
connection and a data scientist's API key, send ``POST /v1/code-versions``, one
new code version (one signed event) per request, for ``--seconds`` per round.
Every 2xx answer left only after its event was committed. Every command of an
API process goes through its group committer, so the events of requests that
arrive together share one transaction and one batch of signatures: the number
of PostgreSQL transactions that wrote the round's events (their ``xmin``) is
printed next to the number of requests. ``--no-group-commit`` (each request
its own transaction) gives the figure to compare with.

Afterwards the ledger is checked: the code-version events recorded are exactly
the answered requests (same count, same ids). The CPU seconds of the server,
PostgreSQL and the clients show where the time goes.

Run from the repository root::

    .venv/bin/python bench/group_commit.py
    .venv/bin/python bench/group_commit.py --clients 32 --seconds 20 --workers 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from bench.append import DEFAULT_DATABASE_URL, install_sigterm_handler, load_average, percentile, say
from bench.serving_setup import (
    ADMIN_KEY,
    CORES,
    CpuMeter,
    CpuUse,
    Server,
    SinglesRound,
    ledger_position,
    post_singles,
    serving_ledger,
)
from domain.code import CodeVersion
from mlledger.client import LedgerClient
from service.settings import Settings
from service.store.persistence import POSTGRES_EVENTS_TABLE, create_engine

TARGET_EVENTS_PER_SECOND = 5_000
PATH = "/v1/code-versions"


def send_writes(base_url: str, api_key: str, *, seconds: float, clients: int, prefix: int) -> SinglesRound:
    """``clients`` threads writing one code version per request for ``seconds``."""

    def body(number: int, sent: int) -> bytes:
        commit = f"{prefix:04x}{number:04x}{sent:08x}"
        return json.dumps({"repository": f"https://git.example/bench/{number}", "commit": commit}).encode()

    return post_singles(base_url, api_key, PATH, body, seconds=seconds, clients=clients, ok=201, answer_id="id")


def recorded(settings: Settings, after: int, upto: int) -> tuple[set[str], int, int]:
    """Code-version events with positions in (after, upto]: their ids, count and writing transactions."""
    engine = create_engine(settings, poolclass=sa.NullPool)
    table = f'"{settings.database_schema}".{POSTGRES_EVENTS_TABLE}'
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT originator_id::text, xmin::text FROM {table} "
                    "WHERE topic = :topic AND notification_id > :after AND notification_id <= :upto"
                ),
                {"topic": CodeVersion.Registered.TOPIC, "after": after, "upto": upto},
            ).all()
    finally:
        engine.dispose()
    return {r[0] for r in rows}, len(rows), len({r[1] for r in rows})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per timed round (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds first (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the verdict is the median's")
    parser.add_argument("--workers", type=int, default=CORES, help=f"API processes (default one per core: {CORES})")
    parser.add_argument(
        "--no-group-commit", action="store_true", help="each request in its own transaction, to compare"
    )
    args = parser.parse_args(argv)
    install_sigterm_handler()
    overrides = {"group_commit_commands": False} if args.no_group_commit else {}
    with serving_ledger(args.database_url, **overrides) as settings:
        log_path = Path(settings.data_dir).parent / "server.log"
        with Server(settings, log_path, projector=False, runner=False, workers=args.workers) as server:
            admin = LedgerClient(server.base_url, ADMIN_KEY, timeout=120)
            writer = admin.create_principal("bench-writer", ["data_scientist"])
            api_key = admin.issue_api_key(writer.id, label="bench writer")
            say(f"warm-up: {args.warmup:.0f} s, {args.clients} clients")
            send_writes(server.base_url, api_key, seconds=args.warmup, clients=args.clients, prefix=0)
            meter = CpuMeter(server.pid)
            rounds: list[SinglesRound] = []
            answered: set[str] = set()
            start_position = ledger_position(settings)
            for number in range(1, args.repeats + 1):
                before = ledger_position(settings)
                meter.start()
                found = send_writes(server.base_url, api_key, seconds=args.seconds, clients=args.clients, prefix=number)
                found.cpu = meter.stop()
                found.transactions = recorded(settings, before, ledger_position(settings))[2]
                answered |= set(found.ids)
                rounds.append(found)
                say(
                    f"round {number}/{args.repeats}: {found.rate:,.0f} events/s, {found.transactions:,} transactions "
                    f"for {len(found.ids):,} requests, load {load_average()}"
                )
            ids, count, _ = recorded(settings, start_position, ledger_position(settings))
            processes = meter.processes()
    median = sorted(rounds, key=lambda r: r.rate)[len(rounds) // 2]
    mode = "each request its own transaction" if args.no_group_commit else "group commit"
    print(
        f"\nML Ledger single-event writes through the HTTP API ({mode}): {args.clients} clients, "
        f"POST {PATH} (one signed event per request), `{server.command}` ({processes}), PostgreSQL"
    )
    print(
        f"{'round':>5} | {'events/s':>9} | {'p50 ms':>6} | {'p99 ms':>6} | {'txns':>6} | {'req/txn':>7} | "
        f"{'CPU ms/request: server':>22} | {'postgres':>8} | {'clients':>7}"
    )
    for number, found in enumerate(rounds, 1):
        per = 1000 / max(1, len(found.ids))
        cpu = found.cpu or CpuUse(0, 0, 0)
        print(
            f"{number:>5} | {found.rate:>9,.0f} | {percentile(found.latencies, 0.5) * 1000:>6.1f} | "
            f"{percentile(found.latencies, 0.99) * 1000:>6.1f} | {found.transactions:>6,} | "
            f"{len(found.ids) / max(1, found.transactions):>7.1f} | {cpu.server * per:>22.2f} | "
            f"{cpu.postgres * per:>8.2f} | {cpu.clients * per:>7.2f}"
        )
    errors = [e for r in rounds for e in r.errors]
    consistent = ids >= answered and count == len(ids) and not errors
    print(
        f"ledger check: {count:,} code-version events recorded in the timed rounds for {len(answered):,} "
        f"answered requests; {len(errors)} non-2xx answers"
        + (f" (first: {errors[0]})" if errors else "")
        + (": ok" if consistent else ": MISMATCH")
    )
    verdict = "ok" if median.rate >= TARGET_EVENTS_PER_SECOND else "MISSED"
    print(
        f"median round: {median.rate:,.0f} events/s (target >= {TARGET_EVENTS_PER_SECOND:,}): {verdict}; "
        f"median of {statistics.median(r.rate for r in rounds):,.0f}; load average now {load_average()}"
    )
    return 0 if consistent else 1


if __name__ == "__main__":
    raise SystemExit(main())
