"""The PostgreSQL recorder's binary arrays read back exactly as the events were written."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from service.pg_recorder import binary_columns
from tests.conftest import PG_URL, require_postgres

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("count", [0, 1, 3, 250])
@pytest.mark.parametrize("id_type", ["uuid", "text"])
def test_binary_columns_round_trip_through_unnest(count: int, id_type: str) -> None:
    require_postgres()
    events = [
        StoredEvent(uuid.uuid4(), 2**40 + i, f"topic-é-{i}", b"\x00state\n" * (i % 7) + bytes([i % 256]))
        for i in range(count)
    ]
    with psycopg.connect(PG_URL) as conn:
        rows = conn.execute(
            f"SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[])",
            binary_columns(events, id_type),
            binary=True,
        ).fetchall()
    assert [(str(i), v, t, bytes(s)) for i, v, t, s in rows] == [
        (str(e.originator_id), e.originator_version, e.topic, e.state) for e in events
    ]
