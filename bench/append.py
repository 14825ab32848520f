"""Benchmark: signed events per second appended through the ledger application.

Every event goes through the real write path: the domain command builds the
aggregate's events, ``Ledger.save`` hands them to ``LedgerEventStore.put``, which
chains each one to its aggregate's previous hash, seals it (canonical JSON,
sha256, Ed25519 signature) and inserts the batch in one transaction. The events
come from ``service.ops.workload.append_events`` (principals with ten events each and
some dataset registrations).

Two modes, each after a warm-up, in a fresh ledger of its own:

* one event per transaction (default 5,000 events; target >= 2,500 events/s);
* batches of 500 events per transaction (default 100,000 events; target
  >= 15,000 events/s);
* with ``--witnesses N``: the batched mode again while the ledger runs as in
  production, a projector process (``mlledger project --follow``) projecting
  the Merkle log, publishing checkpoints (every 1,000 events or 10 s) and
  submitting each to N local witness processes (``mlledger witness serve``,
  policy N of N) during the appends; the same target. It then reports how far
  witnessing had got when the appends ended and whether the checkpoint covering
  the whole log got witnessed (waiting at most ``--witness-wait`` seconds).

By default the ledger is the PostgreSQL at ``--database-url``
(postgresql://postgres@127.0.0.1:5432/test), each mode in a new schema named
``bench_<random>`` that is dropped at the end, also on failure or Ctrl-C. With
``--sqlite`` it is a SQLite file in a temporary directory, removed at the end.

It also prints, for context, the cost per event of the pieces of sealing
(canonical JSON, sha256, Ed25519 signing) measured in this process on a sample
of the same events, so a reader can see where the time goes.

Run from the repository root::

    .venv/bin/python bench/append.py
    .venv/bin/python bench/append.py --sqlite
    .venv/bin/python bench/append.py --events 20000 --single-events 1000
    .venv/bin/python bench/append.py --witnesses 2
    .venv/bin/python bench/append.py --witnesses 2 --single-events 0   # batched modes only

Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from domain.integrity.canonical import canonical_json
from domain.integrity.checkpoint import verifier_key
from domain.integrity.keys import Signer, raw_public_key
from domain.integrity.sealing import ZERO_HASH, SealedEvent
from projections import transparency_log as tlog
from service.bootstrap import Services, open_services
from service.ops.witnessing import latest_witnessed, witness_policy
from service.ops.workload import append_events, dataset, events_for_one_principal
from service.settings import Settings
from service.store import keystore
from service.store.event_store import SealingMapper
from service.store.persistence import create_engine

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
SINGLE_TARGET = 2_500
BATCH_TARGET = 15_000
BATCH_SIZE = 500
DEPTH = 10  # events per principal, as in service.ops.workload
REPO = Path(__file__).resolve().parent.parent


# -- shared helpers (the other benches import these) --------------------------


def say(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(values: Iterable[float], share: float) -> float:
    """The nearest-rank percentile (``share`` from 0 to 1): the smallest of ``values`` with at least that
    share of them at or below it; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ledger_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the ledger's location (data dir, database URL and schema) as
    ``MLLEDGER_`` variables, for a ``python -m service`` subprocess; other ``MLLEDGER_`` variables are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    env.update(
        {
            "MLLEDGER_DATA_DIR": str(settings.data_dir),
            "MLLEDGER_DATABASE_URL": settings.database_url,
            "MLLEDGER_DATABASE_SCHEMA": settings.database_schema,
        }
    )
    return env


def install_sigterm_handler() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (schema drop) still run."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _psycopg_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def drop_schema(database_url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (waits at most 60 s for locks)."""
    engine = sa.create_engine(_psycopg_url(database_url), poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '60s'"))
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_settings(database_url: str, use_sqlite: bool) -> Iterator[Settings]:
    """Settings for an empty ledger: a new ``bench_<random>`` schema, or a temp SQLite file.

    The schema (or the temporary directory) is removed when the block exits,
    however it exits.
    """
    tmp = Path(tempfile.mkdtemp(prefix="mlledger-bench-"))
    schema = f"bench_{secrets.token_hex(6)}"
    try:
        if use_sqlite:
            settings = Settings(data_dir=tmp / "data", database_url="")
        else:
            settings = Settings(data_dir=tmp / "data", database_url=database_url, database_schema=schema)
        yield settings
    finally:
        try:
            if not use_sqlite:
                drop_schema(database_url, schema)
                print(f"dropped schema {schema}", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[Services]:
    """``open_services(settings, migrate=True)``, closed at the end."""
    services = open_services(settings, migrate=True)
    try:
        yield services
    finally:
        services.close()


class Progress:
    """Throttled progress lines on stderr: ``label: done/total (rate/s)``."""

    def __init__(self, label: str, total: int, every: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.every = every
        self.started = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < (0.25 if self.tty else self.every) and done < self.total:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"  {self.label}: {done:,}/{self.total:,} events, {elapsed:.1f} s, {rate:,.0f}/s"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the progress line."""
        if self.tty:
            print(file=sys.stderr, flush=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_database(settings: Settings) -> str:
    """Server, version and durability settings of the ledger's database."""
    engine = create_engine(settings, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                version = conn.exec_driver_sql("SELECT sqlite_version()").scalar()
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                return f"SQLite {version} (journal_mode={mode}, synchronous=NORMAL) in a temp dir"
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            sync = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            fsync = conn.exec_driver_sql("SHOW fsync").scalar()
    finally:
        engine.dispose()
    parts = urlsplit(settings.database_url)
    where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    return f"PostgreSQL {version} at {where} (fsync={fsync}, synchronous_commit={sync})"


def machine_line(database: str) -> str:
    """One line of machine facts."""
    return (
        f"machine: {os.cpu_count()} cores ({_cpu_model()}), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, database {database}"
    )


def verdict(rate: float, target: float) -> str:
    """``ok`` or ``MISSED`` against a target rate."""
    return "ok" if rate >= target else "MISSED"


# -- append benchmark ---------------------------------------------------------


@dataclass
class Result:
    """One timed mode."""

    mode: str
    events: int
    seconds: float
    target: int
    cpu: dict[str, float] | None = None
    """CPU seconds of this process and of PostgreSQL during the timed appends."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def run_mode(settings: Settings, mode: str, count: int, batch: int, warmup: int, target: int) -> Result:
    """Warm up, then time ``count`` events in transactions of ``batch`` events."""
    print(f"{mode}: fresh ledger, warm-up {warmup:,} events", file=sys.stderr, flush=True)
    with opened(settings) as services:
        append_events(services.ledger, warmup, batch=batch, depth=DEPTH)
        before = services.ledger.position()
        parties = {"this process (appends)": [os.getpid()], "PostgreSQL (every server process)": postgres_pids()}
        cpu_before = {name: cpu_seconds(pids) for name, pids in parties.items()}
        progress = Progress(mode, count)
        started = time.perf_counter()
        written = append_events(services.ledger, count, batch=batch, depth=DEPTH, progress=progress)
        seconds = time.perf_counter() - started
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in parties.items()}
        progress(written)
        progress.done()
        recorded = services.ledger.position() - before
    if written != count or recorded != written:
        raise SystemExit(
            f"{mode}: asked for {count} events, the workload wrote {written}, the ledger grew by {recorded}"
        )
    return Result(mode, written, seconds, target, cpu)


# -- the batched mode with checkpoints and witnesses running -----------------------


@dataclass
class Witnessing:
    """What the projector and the witnesses had done by the end of the timed appends, and after."""

    witnesses: int
    ledger_size: int
    checkpoints_during: int
    logged_at_end: int
    witnessed_at_end: int
    final_size: int
    final_witnessed: bool
    seconds_to_witness: float
    cosigners: list[str]
    load: str
    """The load average when the timed appends began and when they ended."""


def start_witness(state: Path, name: str, log_vkey: str) -> tuple[subprocess.Popen[str], str, str]:
    """A ``mlledger witness serve`` subprocess on a free port: (process, URL, cosigner verifier key)."""
    command = [sys.executable, "-m", "service", "witness", "serve", "--state", str(state), "--name", name]
    command += ["--port", "0", "--log", log_vkey]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    vkey = process.stdout.readline().split(" ", 1)[1].strip()
    url = process.stdout.readline().removeprefix("listening on ").strip()
    if not url.startswith("http"):
        process.kill()
        raise SystemExit(f"witness {name} did not start")
    return process, url, vkey


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes ``pids`` have used so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    """The PostgreSQL server processes on this machine (its backends included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    found.append(int(entry.name))
    return found


def stop_processes(processes: list[subprocess.Popen[str]]) -> None:
    """SIGTERM, then SIGKILL after 10 s, each of ``processes``."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tlog_state(services: Services) -> tuple[int, int, int, list[str]]:
    """(checkpoints, logged leaves, newest witnessed tree size, its cosigners) now."""
    policy = witness_policy(services.settings)
    assert policy is not None
    with services.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(tlog.tlog_checkpoints)).scalar_one()
        leaves = tlog.tree_size(conn)
        witnessed = latest_witnessed(conn, policy)
    if witnessed is None:
        return int(count), leaves, 0, []
    return int(count), leaves, witnessed.checkpoint.tree_size, witnessed.cosigners


def run_witnessed_mode(
    base: Settings,
    mode: str,
    count: int,
    batch: int,
    warmup: int,
    witnesses: int,
    wait: float,
    only: list[str] | None = None,
) -> tuple[Result, Witnessing]:
    """The batched mode with a projector process publishing checkpoints and ``witnesses`` local witnesses
    (the projector projects the read models in ``only``, or all of them)."""
    processes: list[subprocess.Popen[str]] = []
    try:
        signer, _ = keystore.load_or_create(base.keys_dir)
        log_vkey = verifier_key(base.log_origin, raw_public_key(signer.public_key))
        listed = []
        for i in range(1, witnesses + 1):
            process, url, vkey = start_witness(base.data_dir.parent / f"witness{i}", f"bench.local/w{i}", log_vkey)
            processes.append(process)
            listed.append(f"w{i}={url}={vkey}")
        settings = Settings(
            data_dir=base.data_dir,
            database_url=base.database_url,
            database_schema=base.database_schema,
            witnesses=",".join(listed),
            witness_policy=str(witnesses),
        )
        say(f"{mode}: fresh ledger, {witnesses} witnesses, warm-up {warmup:,} events")
        with opened(settings) as services:
            projector_log = base.data_dir.parent / "projector.log"
            env = ledger_env(settings)
            env.update({"MLLEDGER_WITNESSES": settings.witnesses, "MLLEDGER_WITNESS_POLICY": settings.witness_policy})
            projector = subprocess.Popen(
                [sys.executable, "-m", "service", "project", "--follow", *(f"--only={name}" for name in only or ())],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=projector_log.open("w"),
                text=True,
            )
            processes.append(projector)
            append_events(services.ledger, warmup, batch=batch, depth=DEPTH)
            # Steady state first: the projector started, caught up with the warm-up and had it witnessed.
            warm = services.ledger.position()
            deadline = time.perf_counter() + wait
            while _tlog_state(services)[2] < warm:
                if projector.poll() is not None or time.perf_counter() > deadline:
                    raise SystemExit(f"{mode}: the warm-up was not witnessed: {projector_log.read_text()[-2000:]}")
                time.sleep(0.1)
            checkpoints_before = _tlog_state(services)[0]
            parties = {
                "this process (appends)": [os.getpid()],
                "projector process": [projector.pid],
                "witness processes": [p.pid for p in processes[:-1]],
                "PostgreSQL (every server process)": postgres_pids(),
            }
            cpu_before = {name: cpu_seconds(pids) for name, pids in parties.items()}
            load = load_average()
            before = services.ledger.position()
            progress = Progress(mode, count)
            started = time.perf_counter()
            written = append_events(services.ledger, count, batch=batch, depth=DEPTH, progress=progress)
            seconds = time.perf_counter() - started
            cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in parties.items()}
            load += " -> " + load_average()
            progress(written)
            progress.done()
            ended = time.perf_counter()
            size = services.ledger.position()
            checkpoints, logged, witnessed, _ = _tlog_state(services)
            if written != count or size - before != written:
                raise SystemExit(
                    f"{mode}: asked for {count} events, wrote {written}, the ledger grew by {size - before}"
                )
            say(f"{mode}: waiting (at most {wait:.0f} s) for a checkpoint of all {size:,} events to be witnessed")
            final_cosigners: list[str] = []
            final, seconds_to_witness = 0, float("nan")
            while time.perf_counter() - ended < wait:
                _, _, final, final_cosigners = _tlog_state(services)
                if final >= size:
                    seconds_to_witness = time.perf_counter() - ended
                    break
                if projector.poll() is not None:
                    raise SystemExit(f"{mode}: the projector exited: {projector_log.read_text()[-2000:]}")
                time.sleep(0.1)
            if final < size:
                say(f"{mode}: the projector's log ends: {projector_log.read_text()[-2000:]}")
        return Result(mode, written, seconds, BATCH_TARGET, cpu), Witnessing(
            witnesses=witnesses,
            ledger_size=size,
            checkpoints_during=checkpoints - checkpoints_before,
            logged_at_end=logged,
            witnessed_at_end=witnessed,
            final_size=final,
            final_witnessed=final >= size,
            seconds_to_witness=seconds_to_witness,
            cosigners=final_cosigners,
            load=load,
        )
    finally:
        stop_processes(processes)


def _time_per_call(func: Callable[[Any], object], items: list[Any], rounds: int) -> float:
    """Mean microseconds per call of ``func`` over ``items``, best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


def sample_events(principals: int = 9, datasets: int = 1) -> list[Any]:
    """Domain events in the workload's mix: per 10 aggregates, 9 principals of 10 events and 1 dataset."""
    events: list[Any] = []
    for index in range(principals):
        events += events_for_one_principal(index, "user:workload", DEPTH).collect_events()
    for index in range(datasets):
        events += dataset(index, "user:workload").collect_events()
    return events


def breakdown(rounds: int = 5) -> list[tuple[str, float]]:
    """Microseconds per event of each step of the write path, measured in-process."""
    signer = Signer.generate()
    mapper = SealingMapper(lambda: signer, 1_048_576)
    events = sample_events() * 10  # 910 events
    sealed = [SealedEvent.from_record(mapper.seal_event(e, ZERO_HASH)[0].state) for e in events]
    envelopes = [json.loads(s.envelope) for s in sealed]
    encoded = [s.envelope for s in sealed]
    digests = [hashlib.sha256(b).digest() for b in encoded]
    avg_bytes = sum(len(b) for b in encoded) / len(encoded)

    def command(index: int) -> None:
        events_for_one_principal(index, "user:workload", DEPTH).collect_events()

    command_us = _time_per_call(command, list(range(100)), rounds) / DEPTH
    return [
        ("domain command (Principal + 9 role events, per event)", command_us),
        (
            f"canonical JSON (canonical_json, {avg_bytes:.0f} B envelope)",
            _time_per_call(lambda env: canonical_json(env, path=""), envelopes, rounds),
        ),
        ("sha256 of the canonical bytes", _time_per_call(lambda b: hashlib.sha256(b).digest(), encoded, rounds)),
        ("Ed25519 sign (Signer.sign of the 32-byte hash)", _time_per_call(signer.sign, digests, rounds)),
        (
            "full seal (SealingMapper.seal_event: all of the above + record)",
            _time_per_call(lambda e: mapper.seal_event(e, ZERO_HASH), events, rounds),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--events", type=int, default=100_000, help="events in the batched mode (default 100,000)")
    parser.add_argument(
        "--single-events", type=int, default=5_000, help="events in the one-per-transaction mode (default 5,000)"
    )
    parser.add_argument("--batch", type=int, default=BATCH_SIZE, help="events per transaction when batched")
    parser.add_argument(
        "--witnesses",
        type=int,
        default=0,
        help="also time the batched mode with a projector process and this many local witnesses (policy: all)",
    )
    parser.add_argument(
        "--witness-wait", type=float, default=120.0, help="seconds to wait for the whole log to be witnessed"
    )
    parser.add_argument(
        "--projector-only",
        action="append",
        metavar="READ_MODEL",
        help="the witnessed mode's projector projects only this read model (repeatable; e.g. transparency_log, "
        "as a deployment with the Merkle log in a process of its own runs it); default: every read model",
    )
    args = parser.parse_args(argv)
    install_sigterm_handler()

    modes = [
        ("one event per transaction", args.single_events, 1, max(200, args.single_events // 20), SINGLE_TARGET),
        (
            f"batches of {args.batch} per transaction",
            args.events,
            args.batch,
            max(5 * args.batch, args.events // 20),
            BATCH_TARGET,
        ),
    ]
    results: list[Result] = []
    database = ""
    for mode, count, batch, warmup, target in modes:
        if count <= 0:
            continue
        with fresh_settings(args.database_url, args.sqlite) as settings:
            results.append(run_mode(settings, mode, count, batch, warmup, target))
            if not database:
                database = describe_database(settings)
    witnessing: Witnessing | None = None
    if args.witnesses > 0:
        mode = f"batches of {args.batch}, {args.witnesses} witnesses"
        if args.projector_only:
            mode += f" ({'+'.join(args.projector_only)} projected)"
        with fresh_settings(args.database_url, args.sqlite) as settings:
            result, witnessing = run_witnessed_mode(
                settings,
                mode,
                args.events,
                args.batch,
                max(5 * args.batch, args.events // 20),
                args.witnesses,
                args.witness_wait,
                args.projector_only,
            )
            results.append(result)
            database = database or describe_database(settings)

    print("measuring per-event costs in-process...", file=sys.stderr, flush=True)
    costs = breakdown()

    backend = "SQLite" if args.sqlite else "PostgreSQL"
    print()
    print(
        f"ML Ledger append benchmark: signed events through Ledger.save on {backend} "
        "(each mode in a fresh ledger, after a warm-up)"
    )
    header = f"{'mode':<36} | {'events':>8} | {'seconds':>8} | {'events/s':>9} | {'target':>10} | result"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:<36} | {r.events:>8,} | {r.seconds:>8.2f} | {r.rate:>9,.0f} | "
            f"{'>= ' + format(r.target, ','):>10} | {verdict(r.rate, r.target)}"
        )
    print(machine_line(database))
    if witnessing is not None:
        w = witnessing
        print()
        print(
            f"with witnessing: a projector process published {w.checkpoints_during} checkpoint(s) during the timed "
            f"appends; when they ended, {w.logged_at_end:,} of {w.ledger_size:,} events were in the Merkle log "
            f"and the newest witnessed checkpoint covered {w.witnessed_at_end:,}"
        )
        if w.final_witnessed:
            print(
                f"latest checkpoint witnessed: yes, tree size {w.final_size:,} (the whole log), cosigned by "
                f"{', '.join(w.cosigners)} ({w.witnesses} of {w.witnesses}), {w.seconds_to_witness:.1f} s after "
                "the last append"
            )
        else:
            print(
                f"latest checkpoint witnessed: NO within the wait; the newest witnessed checkpoint covers "
                f"{w.final_size:,} of {w.ledger_size:,} events"
            )
    print()
    print(f"CPU seconds during each mode's timed appends ({os.cpu_count()} cores; load average {load_average()}):")
    for r in results:
        print(f"  {r.mode} ({r.seconds:.1f} s):")
        for name, used in (r.cpu or {}).items():
            print(f"    {name:<40} {used:>7.1f} s ({used / r.seconds:.0%} of one core)")
    if witnessing is not None:
        print(f"  load average during the timed appends with witnessing: {witnessing.load}")
    print()
    print("where the time goes (µs per event, in-process, best of 5 over the workload's event mix):")
    for label, micros in costs:
        print(f"  {label:<66} {micros:>8.1f} µs")
    for r in results:
        print(f"  {'end to end, ' + r.mode + ' (1 / measured rate)':<66} {1e6 / r.rate:>8.1f} µs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
