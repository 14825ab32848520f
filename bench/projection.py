"""Benchmark: projection throughput, every read model, on a realistic mix of events.

The ledger is written first through the real write path (aggregates, sealing,
chaining, signatures, ``Ledger.save`` in transactions of about 500 events):
governance traffic as in ``bench/audit_query.py`` (principals, datasets, code,
pipelines, runs with parameters, metric batches and artifacts, model versions,
signed approvals and rejections, deployments: champion, challenger, canary,
rollback, stop, resume, retirement), principals whose roles are granted and
revoked (``service.ops.workload``), and predictions of a deployed model (one in
twenty with a data subject, whose key issue is an event too), some with an
outcome recorded later. ``--predictions-share`` sets how much of the log the
predictions are (default half).

Then, each round, every read model is emptied and the projector (the same two
threads ``mlledger serve`` runs: the Merkle log with its checkpoints, and the
other read models) projects the whole log from the start; the round is timed
from its start until every read model and the Merkle log reach the log's end.
The figure is events of the log per second, all read models together (each
event goes through every read model); per read model, the seconds it took.

``--processes N`` projects with N projector processes instead (``mlledger
project --follow --only ...``, as a deployment on more cores runs them): the
Merkle log in the first, the other read models dealt out among the rest; the
CPU figure is then theirs, start-up included.

``--profile FILE`` writes a cProfile of one more round, run on this thread
(both passes in turn), for ``python -m pstats``.

The ledger is a fresh ``bench_<random>`` schema of the PostgreSQL at
``--database-url``, dropped at the end; ``--sqlite`` uses a temporary SQLite file.

Run from the repository root::

    .venv/bin/python bench/projection.py
    .venv/bin/python bench/projection.py --events 200000 --rounds 3
    .venv/bin/python bench/projection.py --sqlite --events 20000

Progress goes to stderr, the results to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import (
    DEFAULT_DATABASE_URL,
    REPO,
    cpu_seconds,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    ledger_env,
    load_average,
    machine_line,
    opened,
    verdict,
)
from bench.audit_query import build as build_governance
from bench.export_bundle import append_predictions
from domain.prediction import Prediction
from projections.base import _write_position
from service.bootstrap import Services
from service.ops.projector import ProjectorThread, log_once, read_models_once
from service.ops.workload import append_events
from service.settings import Settings

TARGET = 20_000.0


def record_outcomes(services: Services, every: int) -> int:
    """Record an outcome for one prediction in ``every``; return how many were recorded."""
    ids = services.ledger.recorder.select_notifications(1, services.ledger.position())
    made = [n.originator_id for n in ids if n.topic == Prediction.Made.TOPIC][::every]
    batch: list[object] = []
    for index, prediction_id in enumerate(made):
        prediction = services.ledger.get(prediction_id, Prediction)
        prediction.record_outcome(outcome=index % 2, actor="bench")
        batch.append(prediction)
        if len(batch) == 500:
            services.ledger.save(*batch)
            batch = []
    if batch:
        services.ledger.save(*batch)
    return len(made)


def build(services: Services, events: int, predictions_share: float) -> dict[str, int]:
    """Write about ``events`` events of mixed traffic; return how many of each kind."""
    predictions = int(events * predictions_share)
    outcomes = predictions // 20
    roles = (events - predictions - outcomes) // 5
    governance = events - predictions - outcomes - roles
    written = {"governance": build_governance(services, governance, 500, seed=7)}
    # The read models take a prediction's model from its event; no model of that name needs to exist.
    version_id = str(uuid.uuid4())
    append_predictions(services, version_id, predictions, subject_every=20)
    written["predictions (+ subject keys)"] = predictions + predictions // 20
    written["role grants and revocations"] = append_events(services.ledger, roles, batch=500)
    written["outcomes"] = record_outcomes(services, 20)
    return written


def empty_read_models(services: Services) -> None:
    """Delete every read model's rows and move every position to 0 (checkpoints stay)."""
    with services.writer_engine.begin() as conn:
        for projection in services.runner.projections.values():
            projection.reset(conn)
            _write_position(conn, projection.name, 0)


def positions(services: Services) -> dict[str, int]:
    """Each read model's position."""
    return {name: services.runner.position(name) for name in services.runner.projections}


def timed_round(services: Services, end: int) -> tuple[float, dict[str, float], float]:
    """Project the whole log with the projector's threads: seconds in all and per read model, and
    CPU seconds of this process (the projector's threads)."""
    empty_read_models(services)
    reached: dict[str, float] = {}
    projector = ProjectorThread(services)
    cpu = time.process_time()
    started = time.perf_counter()
    projector.start()
    try:
        while len(reached) < len(services.runner.projections):
            for name, position in positions(services).items():
                if position >= end and name not in reached:
                    reached[name] = time.perf_counter() - started
            time.sleep(0.02)
    finally:
        projector.stop()
        projector.join(30)
    return max(reached.values()), reached, time.process_time() - cpu


def shares(names: list[str], processes: int) -> list[list[str]]:
    """The read models of each of ``processes`` projector processes: the Merkle log alone in the first
    (when there are two or more), the others dealt out round-robin among the rest."""
    if processes <= 1:
        return [names]
    log, others = names[:1], names[1:]
    rest = [others[i :: processes - 1] for i in range(processes - 1)]
    return [log, *[share for share in rest if share]]


def timed_process_round(
    services: Services, settings: Settings, end: int, processes: int
) -> tuple[float, dict[str, float], float]:
    """Project the whole log with ``processes`` projector processes (``mlledger project --follow --only
    ...``): seconds in all and per read model, and CPU seconds of those processes (start-up included)."""
    empty_read_models(services)
    env = ledger_env(settings)
    env.update(
        {
            "MLLEDGER_PROJECTION_BATCH_SIZE": str(settings.projection_batch_size),
            "MLLEDGER_CHECKPOINT_EVERY_EVENTS": str(settings.checkpoint_every_events),
            "MLLEDGER_CHECKPOINT_EVERY_SECONDS": str(settings.checkpoint_every_seconds),
        }
    )
    reached: dict[str, float] = {}
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "project", "--follow", *(f"--only={name}" for name in share)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for share in shares(list(services.runner.projections), processes)
    ]
    try:
        while len(reached) < len(services.runner.projections):
            for name, position in positions(services).items():
                if position >= end and name not in reached:
                    reached[name] = time.perf_counter() - started
            if any(child.poll() is not None for child in children):
                raise SystemExit("a projector process exited before the read models reached the log's end")
            time.sleep(0.02)
        cpu = cpu_seconds([child.pid for child in children])
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)
    return max(reached.values()), reached, cpu


def profiled_round(services: Services, path: str) -> float:
    """One round on this thread under cProfile; return its seconds.

    The read models run one after another here (a profile sees only its own thread),
    so this is the last round: their threads are not started again.
    """
    empty_read_models(services)
    services.runner.close()
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    while log_once(services) + read_models_once(services):
        pass
    profile.disable()
    seconds = time.perf_counter() - started
    profile.dump_stats(path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="about how many events the log holds")
    parser.add_argument("--predictions-share", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500, help="events per projection batch (default 500)")
    parser.add_argument("--profile", metavar="FILE", help="also write a cProfile of one round to FILE")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="projector processes (mlledger project --follow --only ...): the Merkle log in one, the other read "
        "models dealt out among the rest; default 1: the projector's two threads in this process",
    )
    parser.add_argument("--database-url", default=os.environ.get("MLLEDGER_TEST_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    with fresh_settings(args.database_url, args.sqlite) as settings:
        settings = settings.model_copy(
            update={
                "checkpoint_every_events": 10_000,
                "checkpoint_every_seconds": 60.0,
                "projection_batch_size": args.batch_size,
            }
        )
        with opened(settings) as services:
            print(machine_line(describe_database(settings)))
            print("writing the ledger...", file=sys.stderr, flush=True)
            written = build(services, args.events, args.predictions_share)
            end = services.ledger.position()
            print(f"log: {end:,} events: " + ", ".join(f"{kind} {n:,}" for kind, n in written.items()))
            print(f"batch size {services.runner.batch_size}; read models: {', '.join(services.runner.projections)}")
            if args.processes > 1:
                split = shares(list(services.runner.projections), args.processes)
                print(f"{len(split)} projector processes: " + "; ".join("+".join(share) for share in split))
            rates = []
            for round_number in range(1, args.rounds + 1):
                load = load_average()
                if args.processes > 1:
                    seconds, per_model, cpu = timed_process_round(services, settings, end, args.processes)
                else:
                    seconds, per_model, cpu = timed_round(services, end)
                rate = end / seconds
                rates.append(rate)
                models = ", ".join(f"{name} {s:.1f} s" for name, s in per_model.items())
                print(
                    f"round {round_number}: {seconds:.1f} s, {rate:,.0f} events/s (load before {load}); "
                    f"projector CPU {cpu / end * 1e6:.0f} us per event; {models}"
                )
            if args.profile:
                seconds = profiled_round(services, args.profile)
                print(f"profiled round (one thread, under cProfile): {seconds:.1f} s -> {args.profile}")
    median = statistics.median(rates)
    print(
        f"projection, all read models: median {median:,.0f} events/s over {len(rates)} rounds "
        f"(target >= {TARGET:,.0f}): {verdict(median, TARGET)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
