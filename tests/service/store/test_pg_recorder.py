"""The PostgreSQL recorder: binary arrays read back exactly as written; large batches insert without pipeline mode."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from support.ledger import PG_URL, drop_schema, make_settings, require_postgres

from service.bootstrap import open_services
from service.store.pg_recorder import LedgerPostgresRecorder, binary_columns

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


def test_a_group_commit_of_many_megabytes_is_inserted_without_pipeline_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In pipeline mode psycopg could stall sending a statement this large, with the table locked.
    require_postgres()
    settings = make_settings("postgres", tmp_path / "data")
    services = open_services(settings, migrate=True)
    try:
        recorder = services.ledger.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        before = recorder.max_notification_id() or 0

        def refuse_pipeline(*_: object, **__: object) -> None:
            raise AssertionError("the insert entered pipeline mode")

        monkeypatch.setattr(psycopg.Connection, "pipeline", refuse_pipeline)
        events = [StoredEvent(uuid.uuid4(), 1, "mlledger.test.Big.v1", bytes([i % 256]) * 4096) for i in range(5000)]

        ids = recorder.insert_events(events)

        assert ids == list(range(before + 1, before + 5001))
        assert recorder.max_notification_id() == before + 5000
        stored = recorder.select_events(events[-1].originator_id)
        assert [bytes(e.state) for e in stored] == [events[-1].state]
    finally:
        services.close()
        drop_schema(settings.database_schema)
