"""A projector pass is bounded and puts the Merkle log first: under appends faster than the slowest
read model, checkpoints keep being published (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ledger import drop_schema, make_settings

from projections import transparency_log as tlog
from projections.base import _read_position
from service.bootstrap import Services, open_services
from service.ops.projector import PASS_BATCHES, run_once
from service.ops.workload import append_events

BATCH = 10


@pytest.fixture
def small_batches(backend: str, tmp_path: Path) -> Iterator[Services]:
    settings = make_settings(backend, tmp_path / "data", projection_batch_size=BATCH, checkpoint_every_events=1)
    services = open_services(settings, migrate=True)
    yield services
    services.close()
    if backend == "postgres":
        drop_schema(settings.database_schema)


def positions(services: Services) -> dict[str, int]:
    with services.engine.connect() as conn:
        return {name: _read_position(conn, name, lock=False) for name in services.runner.projections}


def test_a_pass_projects_a_bounded_stretch_and_checkpoints_what_the_log_holds(small_batches: Services) -> None:
    services = small_batches
    append_events(services.ledger, 3 * PASS_BATCHES * BATCH, batch=50)
    end = services.ledger.position()

    projected = run_once(services)

    stretch = PASS_BATCHES * BATCH
    assert projected == stretch * len(services.runner.projections)
    assert set(positions(services).values()) == {stretch}
    with services.engine.connect() as conn:
        latest = tlog.latest_checkpoint(conn)
    assert latest is not None and latest.tree_size == stretch < end


def test_passes_go_on_until_every_read_model_and_the_checkpoint_reach_the_end(small_batches: Services) -> None:
    services = small_batches
    append_events(services.ledger, 3 * PASS_BATCHES * BATCH, batch=50)
    end = services.ledger.position()

    passes = 0
    while run_once(services):
        passes += 1

    assert passes == -(-end // (PASS_BATCHES * BATCH))
    assert set(positions(services).values()) == {end}
    with services.engine.connect() as conn:
        latest = tlog.latest_checkpoint(conn)
    assert latest is not None and latest.tree_size == end
