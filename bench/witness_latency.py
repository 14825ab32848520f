"""Benchmark: from an append to a checkpoint that covers it and meets the witness policy.

Two real witnesses (``mlledger witness serve`` subprocesses on localhost) follow
the ledger; the policy needs both (2 of 2). The projector runs as in ``mlledger
serve`` (a background thread, polling every 20 ms) with a checkpoint after every
new leaf, so each append goes: commit -> projection into the Merkle log ->
signed checkpoint -> add-checkpoint to both witnesses (in parallel, each with
its consistency proof, each fsyncing its state) -> cosignatures stored. The
clock stops when ``latest_witnessed`` covers the appended event's leaf.
Target: p95 <= 2 s.

By default the ledger is the PostgreSQL at ``--database-url`` in a fresh
``bench_<random>`` schema dropped at the end; ``--sqlite`` uses a temporary
SQLite file. Run from the repository root::

    .venv/bin/python bench/witness_latency.py
    .venv/bin/python bench/witness_latency.py --sqlite --appends 100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from append import (  # type: ignore[import-not-found]
    DEFAULT_DATABASE_URL,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    machine_line,
    percentile,
    say,
)

from domain.integrity.checkpoint import verifier_key
from domain.integrity.keys import raw_public_key
from projections import transparency_log as tlog
from service.bootstrap import open_services
from service.ops.projector import ProjectorThread
from service.ops.witnessing import latest_witnessed, witness_policy
from service.ops.workload import append_events
from service.settings import Settings
from service.store import keystore

REPO = Path(__file__).resolve().parent.parent
TARGET_P95 = 2.0


def start_witness(state: Path, name: str, log_vkey: str) -> tuple[subprocess.Popen[str], str, str]:
    """A witness subprocess on a free port: (process, URL, verifier key)."""
    command = [sys.executable, "-m", "service", "witness", "serve", "--state", str(state), "--name", name]
    command += ["--port", "0", "--log", log_vkey]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    vkey = process.stdout.readline().split(" ", 1)[1].strip()
    url = process.stdout.readline().removeprefix("listening on ").strip()
    return process, url, vkey


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200, help="appends to time, one at a time")
    parser.add_argument("--database-url", default=os.environ.get("MLLEDGER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite ledger instead of PostgreSQL")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    witnesses: list[subprocess.Popen[str]] = []
    with fresh_settings(args.database_url, args.sqlite) as base:
        try:
            signer, _ = keystore.load_or_create(base.keys_dir)
            log_vkey = verifier_key(base.log_origin, raw_public_key(signer.public_key))
            listed = []
            for i in (1, 2):
                process, url, vkey = start_witness(base.data_dir.parent / f"w{i}", f"bench.local/w{i}", log_vkey)
                witnesses.append(process)
                listed.append(f"w{i}={url}={vkey}")
            settings = Settings(
                data_dir=base.data_dir,
                database_url=base.database_url,
                database_schema=base.database_schema,
                witnesses=",".join(listed),
                witness_policy="2",
                checkpoint_every_events=1,
                projection_poll_seconds=0.02,
            )
            say(machine_line(describe_database(settings)))
            services = open_services(settings, migrate=True)
            policy = witness_policy(settings)
            assert policy is not None
            projector = ProjectorThread(services)
            projector.start()
            latencies: list[float] = []
            try:
                for i in range(args.appends + 5):
                    started = time.perf_counter()
                    append_events(services.ledger, 1, actor="user:bench")
                    position = services.ledger.recorder.max_notification_id()
                    while True:
                        with services.engine.connect() as conn:
                            leaf = tlog.leaf_for_notification(conn, position)
                            witnessed = latest_witnessed(conn, policy) if leaf is not None else None
                        if (
                            leaf is not None
                            and witnessed is not None
                            and witnessed.checkpoint.tree_size > leaf.leaf_index
                        ):
                            break
                        time.sleep(0.002)
                    if i >= 5:  # warm-up: connections, first checkpoint
                        latencies.append(time.perf_counter() - started)
            finally:
                projector.stop()
                services.close()
        finally:
            for process in witnesses:
                process.kill()
                process.wait()
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(f"append -> witnessed checkpoint (2 of 2 local witnesses), {len(latencies)} appends:")
    print(f"  p50 {p50 * 1000:.0f} ms   p95 {p95 * 1000:.0f} ms   max {max(latencies) * 1000:.0f} ms")
    print(f"  target p95 <= {TARGET_P95:.0f} s: {'ok' if p95 <= TARGET_P95 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
