"""Benchmark: signed, durable predictions per second through ``predict:batch``.

A real server (``python -m service serve --workers N``: a supervisor and N API
processes, by default one per core; ``--workers 1`` is a single process) serves a
``GradientBoostingClassifier`` (100 trees, depth 3) over 30 numeric features,
trained by the server's own runner, registered, approved by two signers and
deployed as champion (``bench/serving_setup.py``). ``--clients`` (default two
per API process, so that one request is read while another is served) load
generators each keep one HTTP connection and send requests of
``--rows-per-request`` (default 1,000) records, each with its own request id,
until ``--requests`` (default 40) requests have been sent; the round is timed
from the first request to the last answer. Every answered record went the
whole way: schema check, prediction, TreeSHAP reason codes, a ``Prediction``
aggregate, canonical JSON, sha256, Ed25519 signature, and a committed
PostgreSQL transaction before the answer left (group commit).

``--repeats`` (default 3) rounds follow ``--warmup`` (default 2) requests that
are not timed; the verdict is the median round's. Afterwards the ledger is checked: the ``Prediction`` events
recorded during the rounds must be exactly the predictions answered 2xx (same
count, same ids), and the number of distinct PostgreSQL transactions (``xmin``)
that wrote them is the number of group commits.

For context it also prints the CPU milliseconds per 1,000 rows used by the
server (all its processes), by the local PostgreSQL processes and by the load
generators, so a reader can see where the time goes on this machine.

The ledger is the PostgreSQL at ``--database-url`` in a fresh schema
``bench_<random>``, dropped at the end (also on failure or Ctrl-C). The
projector and the runner are off while the load runs (``--with-projector``
keeps the projector in the server process: read models then follow the load;
``--projector-process`` runs it beside the server as ``python -m service project
--follow``, the way a production deployment with several API processes does).
With either, ``/readyz`` is sampled four times a second during the rounds: the
report gives the p50, p99 and largest lag of the read models (the age of the
oldest event some read model, the Merkle log included, has not applied yet,
target p99 < 2 s, and the events behind) and how long they took to catch up
once the load stopped. ``--write-brake SECONDS`` sets the server's
``MLLEDGER_WRITE_BRAKE_LAG_SECONDS``: prediction writes then wait while a read
model is that far behind, trading rows per second for a bounded lag;
``--brake-turns N`` sets ``MLLEDGER_WRITE_BRAKE_CONCURRENCY`` (batches each API
process records at once while the brake is on, default 2);
``--group-events N`` bounds what one group commit writes (so what the read
models can find in front of them at once).

Run from the repository root::

    .venv/bin/python bench/predict_batch.py
    .venv/bin/python bench/predict_batch.py --clients 4 --requests 80 --repeats 5
    .venv/bin/python bench/predict_batch.py --with-projector
    .venv/bin/python bench/predict_batch.py --clients 16 --projector-process
    .venv/bin/python bench/predict_batch.py --clients 16 --projector-process --write-brake 0.5 --group-events 4000

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.append import install_sigterm_handler, load_average, percentile
from bench.serving_setup import (
    ESTIMATORS,
    FEATURES,
    MAX_DEPTH,
    REPO,
    CpuUse,
    Deployed,
    RowsRound,
    add_serving_arguments,
    batch_body,
    encoded_rows,
    input_rows,
    load_target,
    measure,
    post_rows,
    print_footer,
    server_env,
)

TARGET_ROWS_PER_SECOND = 10_000
TARGET_LAG_P99_SECONDS = 2.0


class LagSampler:
    """Samples ``/readyz`` (the read models' lag) on a thread of its own until stopped."""

    def __init__(self, base_url: str, every: float = 0.25) -> None:
        self.url = f"{base_url}/readyz"
        self.every = every
        self.seconds: list[float] = []
        self.events: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-lag-sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(self.every):
                try:
                    body = client.get(self.url).json()
                    self.seconds.append(float(body["oldest_unprojected_seconds"]))
                    self.events.append(max(body["projection_lag"].values()))
                except (httpx.HTTPError, KeyError, ValueError):
                    self.failures += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def caught_up_after(base_url: str, timeout: float = 180.0) -> float | None:
    """Seconds until every read model reached the log's end (None if not within ``timeout``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if not any(httpx.get(f"{base_url}/readyz", timeout=10).json()["projection_lag"].values()):
                return time.perf_counter() - started
        time.sleep(0.1)
    return None


def database_activity(database_url: str) -> str:
    """What every session of the database is doing (state, what it waits on, its query), one per line."""
    import psycopg

    query = (
        "SELECT pid, application_name, state, wait_event_type, wait_event, now() - xact_start, left(query, 160) "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        return "\n".join(" | ".join(str(v) for v in row) for row in conn.execute(query).fetchall())


@contextlib.contextmanager
def projector_process(target: Any, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m service project --follow`` against the load server's ledger, stopped at the end."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "project", "--follow"],
            env=server_env(target.settings),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            print(f"the projector process exited early ({process.returncode}):\n{tail}", file=sys.stderr)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def send_batches(
    base_url: str, deployed: Deployed, encoded: list[str], *, requests: int, rows: int, clients: int, prefix: str
) -> RowsRound:
    """``requests`` batch requests from ``clients`` threads; every answered prediction id is kept."""
    return post_rows(
        base_url,
        deployed.predictor_key,
        f"/v1/models/{deployed.model}/predict:batch",
        lambda index: batch_body(encoded, index * rows, rows, f"{prefix}-{index}"),
        requests=requests,
        clients=clients,
        ok=200,
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
    parser.add_argument(
        "--projector-process",
        action="store_true",
        help="run the projector beside the server (python -m service project --follow) and sample the lag",
    )
    parser.add_argument(
        "--write-brake",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="MLLEDGER_WRITE_BRAKE_LAG_SECONDS of the server: prediction writes wait while a read model is this "
        "many seconds behind (default 0: never)",
    )
    parser.add_argument(
        "--brake-turns",
        type=int,
        default=None,
        metavar="N",
        help="MLLEDGER_WRITE_BRAKE_CONCURRENCY of the server: batches each API process records at once while "
        "the brake is on (default 2)",
    )
    parser.add_argument(
        "--group-events",
        type=int,
        default=None,
        metavar="N",
        help="MLLEDGER_GROUP_COMMIT_MAX_EVENTS of the server: most events one group commit writes (default 20,000)",
    )
    args = parser.parse_args(argv)
    if args.with_projector and args.projector_process:
        parser.error("--with-projector and --projector-process exclude each other")
    if args.clients is None:
        args.clients = 2 * args.workers

    install_sigterm_handler()
    load_before = load_average()
    encoded = encoded_rows(input_rows(5_000))
    with load_target(
        args.database_url,
        "mlledger-predict-batch-",
        projector=args.with_projector,
        workers=args.workers,
        max_batch_rows=max(10_000, args.rows_per_request),
        write_brake_lag_seconds=args.write_brake,
        **({"group_commit_max_events": args.group_events} if args.group_events else {}),
        **({"write_brake_concurrency": args.brake_turns} if args.brake_turns else {}),
    ) as target:
        url, deployed, rows = target.server.base_url, target.deployed, args.rows_per_request
        sampler = LagSampler(url) if args.with_projector or args.projector_process else None
        beside = (
            projector_process(target, target.server.log_path.with_name("projector.log"))
            if args.projector_process
            else contextlib.nullcontext()
        )
        with beside:
            if sampler is not None:
                sampler.start()
            try:
                measured = measure(
                    target,
                    warm=lambda: send_batches(
                        url, deployed, encoded, requests=args.warmup, rows=rows, clients=1, prefix="warm"
                    ),
                    timed=lambda number: send_batches(
                        url,
                        deployed,
                        encoded,
                        requests=args.requests,
                        rows=rows,
                        clients=args.clients,
                        prefix=f"r{number}",
                    ),
                    repeats=args.repeats,
                    progress=lambda found: f"{found.rows:,} rows in {found.seconds:.2f} s = {found.rate:,.0f} rows/s",
                )
            finally:
                if sampler is not None:
                    sampler.stop()
            drained = caught_up_after(url) if sampler is not None else None
            if sampler is not None and drained is None:  # say why, before the temporary directory goes
                for log_path in (target.server.log_path.with_name("projector.log"), target.server.log_path):
                    if log_path.exists():
                        tail = log_path.read_text(errors="replace")[-4000:]
                        print(f"the read models never caught up; the tail of {log_path.name}:\n{tail}", file=sys.stderr)
                print("the database's sessions now:\n" + database_activity(args.database_url), file=sys.stderr)
    load_after = load_average()

    rounds = measured.rounds
    rates = [r.rate for r in rounds]
    best, typical = max(rates), statistics.median(rates)
    print()
    print(
        f"ML Ledger serving: signed, durable predictions through predict:batch "
        f"({args.rows_per_request:,} rows per request, {args.clients} concurrent clients)"
    )
    print(
        f"model: GradientBoostingClassifier(n_estimators={ESTIMATORS}, max_depth={MAX_DEPTH}) on {FEATURES} "
        "numeric features, trained by the server's runner, two signed approvals, champion; "
        "TreeSHAP reason codes (top 4) per row"
    )
    print(f"server: `{target.server.command}` ({measured.processes}); PostgreSQL commit before every answer")
    if args.write_brake:
        print(
            f"write brake: prediction writes wait while a read model is more than {args.write_brake:g} s behind; "
            f"{target.settings.write_brake_concurrency} batches per API process recorded at once"
        )
    header = (
        f"{'#':>2} | {'requests':>8} | {'rows':>7} | {'seconds':>7} | {'rows/s':>7} | "
        f"{'req p50 ms':>10} | {'p95 ms':>7} | {'p99 ms':>7} | {'txns':>5} | "
        f"{'CPU ms/1000 rows: server':>24} | {'postgres':>8} | {'clients':>7}"
    )
    print(header)
    print("-" * len(header))
    for number, found in enumerate(rounds, start=1):
        cpu = found.cpu or CpuUse(0, 0, 0)
        per = 1_000_000 / found.rows if found.rows else 0.0
        p50, p95, p99 = (percentile(found.latencies, share) * 1000 for share in (0.50, 0.95, 0.99))
        print(
            f"{number:>2} | {found.requests:>8} | {found.rows:>7,} | {found.seconds:>7.2f} | {found.rate:>7,.0f} | "
            f"{p50:>10.0f} | {p95:>7.0f} | {p99:>7.0f} | {found.transactions:>5} | "
            f"{cpu.server * per:>24.0f} | {cpu.postgres * per:>8.0f} | {cpu.clients * per:>7.0f}"
        )
    print("-" * len(header))
    print(
        f"rows/s: best {best:,.0f}, median {typical:,.0f} (target >= {TARGET_ROWS_PER_SECOND:,}) "
        f"=> {'PASS' if typical >= TARGET_ROWS_PER_SECOND else 'MISSED'} (median round)"
    )
    if sampler is not None:
        where = "a projector process beside the server" if args.projector_process else "the projector in the server"
        if sampler.seconds:
            lag_p50, lag_p99 = (percentile(sampler.seconds, share) for share in (0.50, 0.99))
            verdict = "PASS" if lag_p99 < TARGET_LAG_P99_SECONDS else "MISSED"
            print(
                f"read-model lag under the load ({where}; {len(sampler.seconds)} samples of /readyz, "
                f"{sampler.failures} failed): oldest unapplied event p50 {lag_p50:.2f} s, p99 {lag_p99:.2f} s, "
                f"max {max(sampler.seconds):.2f} s (target p99 < {TARGET_LAG_P99_SECONDS:.0f} s => {verdict}); "
                f"events behind p99 {percentile(sampler.events, 0.99):,.0f}, max {max(sampler.events):,}"
            )
        caught = "not within 180 s" if drained is None else f"{drained:.1f} s"
        print(f"read models caught up after the load stopped: {caught}")
    answered = sum(r.rows for r in rounds) + measured.warm.rows
    return 0 if print_footer(measured, target.database, load_before, load_after, answered) else 1


if __name__ == "__main__":
    sys.exit(main())
