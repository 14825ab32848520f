"""Heartbeat rows: one statement inserts the new ones and refreshes the others."""

from __future__ import annotations

import sqlalchemy as sa

from service.application import heartbeats
from service.bootstrap import Services
from service.store.tables import runner_heartbeats


def _rows(services: Services) -> dict[tuple[str, str], float]:
    with services.engine.connect() as conn:
        rows = conn.execute(sa.select(runner_heartbeats)).all()
    return {(row.run_id, row.runner_id): row.beat_at for row in rows}


def test_a_beat_inserts_new_rows_and_refreshes_those_there_already(services: Services) -> None:
    heartbeats.beat(services.engine, ["run-1"], "runner-a", now=100.0)
    heartbeats.beat(services.engine, ["run-1"], "runner-b", now=100.0)

    heartbeats.beat(services.engine, ["run-1", "run-2", "run-1"], "runner-a", now=130.0)

    assert _rows(services) == {
        ("run-1", "runner-a"): 130.0,
        ("run-2", "runner-a"): 130.0,
        ("run-1", "runner-b"): 100.0,
    }
    assert [run_id for run_id, _, _ in heartbeats.stale(services.engine, 10.0, now=125.0)] == ["run-1"]
