"""Heartbeats of executing runs, and the sweep that marks silent runs abandoned."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from domain.errors import LedgerError, NotFound
from domain.run import Run
from service.application.ledger import Ledger
from service.store.tables import runner_heartbeats

log = logging.getLogger(__name__)


def beat(engine: Engine, run_ids: list[str], runner_id: str, now: float | None = None) -> None:
    """Record a sign of life for each run (inserting rows that do not exist yet), in one statement."""
    if not run_ids:
        return
    moment = time.time() if now is None else now
    rows = [{"run_id": run_id, "runner_id": runner_id, "beat_at": moment} for run_id in dict.fromkeys(run_ids)]
    with engine.begin() as conn:
        conn.execute(_UPSERTS[engine.dialect.name], rows)


def _upsert(dialect: str) -> sa.Executable:
    """``INSERT ... ON CONFLICT (run_id, runner_id) DO UPDATE SET beat_at`` (PostgreSQL and SQLite both have it)."""
    key = [runner_heartbeats.c.run_id, runner_heartbeats.c.runner_id]
    if dialect == "postgresql":
        on_pg = postgresql.insert(runner_heartbeats)
        return on_pg.on_conflict_do_update(index_elements=key, set_={"beat_at": on_pg.excluded.beat_at})
    on_sqlite = sqlite.insert(runner_heartbeats)
    return on_sqlite.on_conflict_do_update(index_elements=key, set_={"beat_at": on_sqlite.excluded.beat_at})


_UPSERTS = {dialect: _upsert(dialect) for dialect in ("postgresql", "sqlite")}
"""Built once: the rows go in as parameters, so the statement is compiled once per process."""


def forget(engine: Engine, run_id: str, runner_id: str) -> None:
    """The run is no longer executing under ``runner_id``."""
    with engine.begin() as conn:
        conn.execute(_FORGET, {"run_id": run_id, "runner_id": runner_id})


_FORGET = runner_heartbeats.delete().where(
    runner_heartbeats.c.run_id == sa.bindparam("run_id"), runner_heartbeats.c.runner_id == sa.bindparam("runner_id")
)


def stale(engine: Engine, timeout: float, now: float | None = None) -> list[tuple[str, str, float]]:
    """(run id, runner id, last beat) of every run whose runner has been silent for ``timeout`` seconds."""
    moment = time.time() if now is None else now
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(runner_heartbeats.c.run_id, runner_heartbeats.c.runner_id, runner_heartbeats.c.beat_at).where(
                runner_heartbeats.c.beat_at < moment - timeout
            )
        ).all()
    return [(str(run_id), str(runner_id), float(beat_at)) for run_id, runner_id, beat_at in rows]


def sweep(
    engine: Engine,
    ledger: Ledger,
    timeout: float,
    actor: str,
    now: float | None = None,
    keep: Callable[[Run, float], bool] | None = None,
) -> list[str]:
    """Mark runs whose runner went silent for ``timeout`` seconds abandoned; return their ids.

    ``keep(run, silent_seconds)`` spares a run for now (its heartbeat row stays, so a later sweep
    or a runner that re-attaches finds it)."""
    moment = time.time() if now is None else now
    abandoned = []
    for run_id, runner_id, beat_at in stale(engine, timeout, moment):
        try:
            run: Run = ledger.get(run_id, Run)
            silent = moment - beat_at
            if run.is_active_under(runner_id) and keep is not None and keep(run, silent):
                continue
            if run.is_active_under(runner_id):
                ledger.abandon_run(run_id, runner_id, f"no heartbeat from runner {runner_id} for {silent:.0f} s", actor)
                abandoned.append(run_id)
                log.warning("run %s abandoned: runner %s silent for %.0f s", run_id, runner_id, silent)
        except (NotFound, LedgerError) as exc:
            log.info("sweep skipped run %s: %s", run_id, exc)
        forget(engine, run_id, runner_id)
    return abandoned
