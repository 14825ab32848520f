"""Migration 0013 turns the audit trail's per-event time watermarks into per-block ones, on SQLite
and on PostgreSQL: each block gets the highest high and the lowest low watermark of its events, the
per-event columns go, and a time query on the migrated trail finds what it found before. Downgrading
gives every event its block's watermarks back."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import migrations
from projections.audit_queries import audit_events
from service.bootstrap import open_services
from service.settings import Settings
from service.store.persistence import create_engine

BLOCK = 1024
# Notification ids spread over three blocks, with times that disagree with the ids across blocks.
TIMES = {
    5: "2026-01-01T00:00:05.000000Z",
    1000: "2026-01-01T00:00:09.000000Z",
    1030: "2026-01-01T00:00:03.000000Z",
    2050: "2026-01-01T00:00:07.000000Z",
    2051: "2026-01-01T00:00:08.000000Z",
}


def _config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["settings"] = settings
    return config


def _per_event_rows() -> list[dict[str, object]]:
    ids = sorted(TIMES)
    return [
        {
            "notification_id": nid,
            "aggregate_id": f"agg-{nid}",
            "aggregate_type": "Principal",
            "version": 1,
            "event_type": "Created",
            "topic": "mlledger.principal.Created.v1",
            "actor": "alice",
            "recorded_at": TIMES[nid],
            "summary": "{}",
            "hash": "0" * 64,
            "high_watermark": max(TIMES[i] for i in ids if i <= nid),
            "low_watermark": min(TIMES[i] for i in ids if i >= nid),
        }
        for nid in ids
    ]


def test_the_watermarks_move_to_blocks_and_back(settings: Settings) -> None:
    config = _config(settings)
    command.upgrade(config, "0012")
    engine = create_engine(settings, poolclass=sa.NullPool)
    try:
        audit = sa.Table("audit_events", sa.MetaData(), autoload_with=engine, schema=None)
        with engine.begin() as conn:
            conn.execute(audit.insert(), _per_event_rows())
        command.upgrade(config, "0013")

        with engine.connect() as conn:
            blocks = conn.execute(
                sa.text("SELECT block, high_watermark, low_watermark FROM audit_time_blocks ORDER BY block")
            ).all()
            columns = {c["name"] for c in sa.inspect(conn).get_columns("audit_events")}
        services = open_services(settings)  # the migrated database is at head
        try:
            with services.engine.connect() as conn:
                window = audit_events(conn, since="2026-01-01T00:00:04Z", until="2026-01-01T00:00:08Z")
        finally:
            services.close()

        command.downgrade(config, "0012")
        with engine.connect() as conn:
            back = conn.execute(
                sa.text("SELECT notification_id, high_watermark, low_watermark FROM audit_events ORDER BY 1")
            ).all()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()

    assert [tuple(b) for b in blocks] == [
        (0, "2026-01-01T00:00:09.000000Z", "2026-01-01T00:00:03.000000Z"),
        (1, "2026-01-01T00:00:09.000000Z", "2026-01-01T00:00:03.000000Z"),
        (2, "2026-01-01T00:00:09.000000Z", "2026-01-01T00:00:07.000000Z"),
    ]
    assert not {"high_watermark", "low_watermark"} & columns
    assert [e.notification_id for e in window.events] == [5, 2050]
    assert "audit_time_blocks" not in tables
    assert [tuple(r) for r in back] == [
        (nid, blocks[nid // BLOCK][1], blocks[nid // BLOCK][2]) for nid in sorted(TIMES)
    ]
