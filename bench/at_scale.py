"""Benchmark: the ledger at scale, measured through the API and the CLI on a generated ledger.

On a ledger written by ``bench/generate_ledger.py`` (``--schema NAME``, or
``--events N`` to generate one first), with a real ``mlledger serve`` (one API
process, no projector, no runner) on a free port:

* audit queries through ``GET /v1/audit/events`` (first page of 100, filtered
  by actor, aggregate, event type, model, a time window): p50/p95/p99, target
  p95 < 50 ms;
* decision lookups (``GET /v1/predictions/{id}``, random predictions), target
  p95 < 50 ms; lineage of a random model version; champion at a random moment;
* ``mlledger verify`` of the whole ledger (every core): time and peak RSS;
* ``mlledger export --model credit`` of the first ``--export-predictions``
  predictions of the headline model (the window ends at the recorded time of
  the last of them), then ``mlledger verify-bundle`` of that bundle offline:
  time, size and peak RSS of each;
* the API process's RSS before and after the queries.

Peak RSS is the largest sum of the resident memory of a command's process tree,
sampled every 0.2 s. Each request is timed by the client over one kept-alive
connection, as a compliance officer's tool would see it.

Run from the repository root::

    .venv/bin/python bench/generate_ledger.py --events 1000000      # prints the schema
    .venv/bin/python bench/at_scale.py --schema bench_0123456789ab
    .venv/bin/python bench/at_scale.py --events 20000 --drop        # small, generated and dropped
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa

from bench.append import (
    DEFAULT_DATABASE_URL,
    describe_database,
    drop_schema,
    install_sigterm_handler,
    load_average,
    machine_line,
    percentile,
    say,
)
from bench.generate_ledger import generate, ledger_settings, serving_model_name
from bench.serving_setup import ADMIN_KEY, REPO, Server, process_tree, server_env
from bench.soak import rss_kib
from service.settings import Settings
from service.store.persistence import create_engine

TARGET_P95_MS = 50.0
HEADLINE = serving_model_name(0)


# -- peak memory of a command ------------------------------------------------------------------


def tree_rss_kib(pid: int) -> int:
    """The resident memory of a process and its descendants, summed (KiB)."""
    return sum(kib for member in process_tree(pid) if (kib := rss_kib(member)) is not None)


@dataclass(frozen=True)
class Command:
    """A CLI command's outcome: exit status, seconds, peak RSS of its process tree (KiB), output tail."""

    rc: int
    seconds: float
    peak_kib: int
    output: str


def run_measured(args: list[str], env: dict[str, str], timeout: float = 7200) -> Command:
    """Run ``python -m service ARGS`` and sample its process tree's RSS until it exits."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "service", *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss_kib(process.pid))
            if time.perf_counter() - started > timeout:
                process.kill()
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Command(process.returncode, seconds, peak, text.strip()[-1500:])


class RssWatch:
    """The peak RSS of a running process tree, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            self.stop.wait(0.2)

    def __enter__(self) -> RssWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


# -- queries through the API --------------------------------------------------------------------


@dataclass
class Sample:
    """Values the random requests draw from (read from the read models)."""

    actors: list[str]
    aggregates: list[str]
    types: list[str]
    models: list[str]
    versions: list[tuple[str, int]]
    predictions: list[str]
    first: str
    last: str


def draw_sample(settings: Settings, rng: random.Random) -> Sample:
    engine = create_engine(settings, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            top = conn.exec_driver_sql("SELECT max(notification_id) FROM audit_events").scalar_one()
            picks = [rng.randrange(1, top + 1) for _ in range(2000)]
            rows = conn.execute(
                sa.text("SELECT aggregate_id, actor, event_type FROM audit_events WHERE notification_id = ANY(:ids)"),
                {"ids": picks},
            ).all()
            # The trail's time blocks know its first and last times (indexed), where
            # min/max(recorded_at) would read every row.
            first = conn.exec_driver_sql(
                "SELECT low_watermark FROM audit_time_blocks ORDER BY low_watermark LIMIT 1"
            ).scalar_one()
            last = conn.exec_driver_sql(
                "SELECT high_watermark FROM audit_time_blocks ORDER BY high_watermark DESC LIMIT 1"
            ).scalar_one()
            # Predictions at random places in the log (its aggregate ids), not OFFSET n (which reads n rows).
            predictions = list(
                conn.execute(
                    sa.text(
                        "SELECT aggregate_id FROM audit_events WHERE notification_id = ANY(:ids)"
                        " AND aggregate_type = 'Prediction' LIMIT 200"
                    ),
                    {"ids": [rng.randrange(1, top + 1) for _ in range(1000)]},
                ).scalars()
            )
            versions = [
                (r[0], int(r[1])) for r in conn.exec_driver_sql("SELECT model_name, number FROM reg_model_versions")
            ]
            models = list(conn.exec_driver_sql("SELECT DISTINCT model_name FROM reg_deployment_history").scalars())
    finally:
        engine.dispose()
    return Sample(
        actors=sorted({r[1] for r in rows}),
        aggregates=[r[0] for r in rows],
        types=sorted({r[2] for r in rows}),
        models=models,
        versions=versions,
        predictions=[str(p) for p in predictions],
        first=first,
        last=last,
    )


def requests(s: Sample, rng: random.Random) -> dict[str, Callable[[], tuple[str, dict[str, Any]]]]:
    """Each kind of request: a function drawing (path, query parameters)."""

    def audit(**params: Any) -> tuple[str, dict[str, Any]]:
        return "/v1/audit/events", {"limit": 100, **params}

    def window() -> tuple[str, dict[str, Any]]:
        lo, hi = s.first, s.last
        # a window of about 1% of the ledger's time span, by string interpolation of two RFC 3339 stamps
        from domain.integrity.sealing import format_timestamp, parse_timestamp

        start, end = parse_timestamp(lo), parse_timestamp(hi)
        begin = start + (end - start) * rng.random() * 0.99
        return audit(since=format_timestamp(begin), until=format_timestamp(begin + (end - start) / 100))

    def champion() -> tuple[str, dict[str, Any]]:
        from domain.integrity.sealing import format_timestamp, parse_timestamp

        start, end = parse_timestamp(s.first), parse_timestamp(s.last)
        return f"/v1/models/{rng.choice(s.models)}/champion", {
            "at": format_timestamp(start + (end - start) * rng.random())
        }

    def lineage() -> tuple[str, dict[str, Any]]:
        name, number = rng.choice(s.versions)
        return f"/v1/models/{name}/versions/{number}/lineage", {}

    out: dict[str, Callable[[], tuple[str, dict[str, Any]]]] = {
        "audit by actor": lambda: audit(actor=rng.choice(s.actors)),
        "audit by aggregate": lambda: audit(aggregate_id=rng.choice(s.aggregates)),
        "audit by event type": lambda: audit(type=rng.choice(s.types)),
        "audit by model": lambda: audit(model=rng.choice(s.models)),
        "audit by time window (1%)": window,
        "lineage of a model version": lineage,
        "champion at a moment": champion,
    }
    if s.predictions:
        out["decision lookup"] = lambda: (f"/v1/predictions/{rng.choice(s.predictions)}", {})
    return out


@dataclass(frozen=True)
class Timing:
    name: str
    millis: list[float]
    errors: int


def measure_queries(base_url: str, sample: Sample, count: int, seed: int) -> list[Timing]:
    rng = random.Random(seed)
    results = []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        for name, draw in requests(sample, rng).items():
            for _ in range(max(5, count // 10)):  # warm-up
                path, params = draw()
                client.get(path, params=params)
            millis, errors = [], 0
            for _ in range(count):
                path, params = draw()
                started = time.perf_counter()
                response = client.get(path, params=params)
                millis.append((time.perf_counter() - started) * 1000)
                errors += response.status_code >= 400
            results.append(Timing(name, millis, errors))
            say(f"  measured {name}: p95 {percentile(millis, 0.95):.1f} ms")
    return results


# -- the export window ---------------------------------------------------------------------------


def export_window(settings: Settings, count: int) -> tuple[str | None, int]:
    """The recorded time of the headline model's ``count``-th prediction (None: all), and how many it covers."""
    engine = create_engine(settings, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            total = conn.execute(
                sa.text("SELECT count(*) FROM predictions WHERE model_name = :m"), {"m": HEADLINE}
            ).scalar_one()
            if total <= count:
                return None, int(total)
            until = conn.execute(
                sa.text(
                    "SELECT recorded_at FROM predictions WHERE model_name = :m ORDER BY recorded_at OFFSET :o LIMIT 1"
                ),
                {"m": HEADLINE, "o": count - 1},
            ).scalar_one()
            covered = conn.execute(
                sa.text("SELECT count(*) FROM predictions WHERE model_name = :m AND recorded_at <= :t"),
                {"m": HEADLINE, "t": until},
            ).scalar_one()
    finally:
        engine.dispose()
    return str(until), int(covered)


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--schema", help="a ledger written by bench/generate_ledger.py")
    parser.add_argument("--events", type=int, help="generate a ledger of about this many events first")
    parser.add_argument("--drop", action="store_true", help="drop the ledger at the end")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--queries", type=int, default=200, help="timed requests of each kind (default 200)")
    parser.add_argument("--export-predictions", type=int, default=1_000_000, help="predictions in the export")
    parser.add_argument("--skip-export", action="store_true", help="measure queries and verify only")
    parser.add_argument("--skip-verify", action="store_true", help="do not run mlledger verify of the whole ledger")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not args.schema and not args.events:
        parser.error("give --schema NAME (a generated ledger) or --events N")
    install_sigterm_handler()
    load_start = load_average()
    schema = args.schema or f"bench_{secrets.token_hex(6)}"
    settings = ledger_settings(args.database_url, schema)
    try:
        if args.events and not args.schema:
            say(f"generating {args.events:,} events in {schema}")
            generate(settings, args.events)
        return measure(args, settings, load_start)
    finally:
        if args.drop:
            drop_schema(args.database_url, schema)
            shutil.rmtree(settings.data_dir, ignore_errors=True)
            say(f"dropped schema {schema}")


def measure(args: argparse.Namespace, settings: Settings, load_start: str) -> int:
    env = server_env(settings)
    rng = random.Random(args.seed)
    sample = draw_sample(settings, rng)
    with tempfile.TemporaryDirectory(prefix="mlledger-at-scale-") as tmp:
        server = Server(settings, Path(tmp) / "serve.log", projector=False, runner=False)
        try:
            server.start(timeout=300)
            rss_before = tree_rss_kib(server.pid)
            with RssWatch(server.pid) as watch:
                timings = measure_queries(server.base_url, sample, args.queries, args.seed)
            rss_after = tree_rss_kib(server.pid)
            events = int(httpx.get(f"{server.base_url}/readyz", timeout=10).json()["position"])
        finally:
            server.stop()  # also when it never answered: no server is left behind
        load_queries = load_average()
        verified = None
        if not args.skip_verify:
            say("verifying the whole ledger (mlledger verify)")
            verified = run_measured(["verify"], env)
        load_verify = load_average()
        exported = bundle_checked = None
        covered = 0
        if not args.skip_export:
            until, covered = export_window(settings, args.export_predictions)
            bundle = Path(tmp) / "bundle.zip"
            say(f"exporting {HEADLINE}: {covered:,} predictions" + (f" up to {until}" if until else ""))
            exported = run_measured(
                ["export", "--model", HEADLINE, "--out", str(bundle), "--predictions", "all"]
                + (["--to", until] if until else []),
                env,
            )
            size = bundle.stat().st_size if bundle.exists() else 0
            say("verifying the bundle offline (mlledger verify-bundle)")
            bundle_checked = run_measured(["verify-bundle", str(bundle)], env)
        load_end = load_average()
        database = describe_database(settings)

    print()
    print(
        f"ML Ledger at scale: {events:,} events in schema {settings.database_schema}; {args.queries} timed requests "
        f"of each kind through the API (one process, one kept-alive connection, after a warm-up)"
    )
    header = f"{'request':<30} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | {'errors':>6} | result"
    print(header)
    print("-" * len(header))
    ok = True
    for t in timings:
        p50, p95, p99 = (percentile(t.millis, q) for q in (0.5, 0.95, 0.99))
        met = p95 < TARGET_P95_MS and not t.errors
        ok &= met
        print(
            f"{t.name:<30} | {p50:>7.1f} | {p95:>7.1f} | {p99:>7.1f} | {max(t.millis):>7.1f} | {t.errors:>6} | "
            f"{'ok' if met else 'MISSED'} (p95 < {TARGET_P95_MS:.0f} ms)"
        )
    print(
        f"API process RSS: {rss_before / 1024:.0f} MiB before the queries, {rss_after / 1024:.0f} MiB after, "
        f"peak {watch.peak / 1024:.0f} MiB"
    )
    if verified is not None:
        print(
            f"mlledger verify: exit {verified.rc}, {verified.seconds:.1f} s "
            f"({events / verified.seconds:,.0f} events/s), "
            f"peak RSS {verified.peak_kib / 1024:.0f} MiB (all its processes)"
        )
        ok &= verified.rc == 0
        if verified.rc != 0:
            print("  " + verified.output.replace("\n", "\n  "))
    if exported is not None and bundle_checked is not None:
        print(
            f"mlledger export --model {HEADLINE} ({covered:,} predictions): exit {exported.rc}, "
            f"{exported.seconds:.1f} s, bundle {size / 1e6:.1f} MB, peak RSS {exported.peak_kib / 1024:.0f} MiB"
        )
        print(
            f"mlledger verify-bundle: exit {bundle_checked.rc}, {bundle_checked.seconds:.1f} s, "
            f"peak RSS {bundle_checked.peak_kib / 1024:.0f} MiB"
        )
        ok &= exported.rc == 0 and bundle_checked.rc == 0
        for step in (exported, bundle_checked):
            if step.rc != 0:
                print("  " + step.output.replace("\n", "\n  "))
    print(machine_line(database))
    print(
        f"load average (1/5/15 min): {load_start} at start, {load_queries} after the queries, "
        f"{load_verify} after verify, {load_end} at the end"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
