"""The audit trail: one row per event, every event, indexed for the questions an
auditor asks (who did what, to which aggregate, of which type, about which
model, when), each answered in notification order with a cursor.

Time filters are answered through watermarks kept per block of ``TIME_BLOCK``
notification ids (``audit_time_blocks``), because an event's ``recorded_at``
(taken when the command ran) need not grow with its notification id (given when
it was stored): a block's ``high_watermark`` is the latest time of any event up
to the block's end, its ``low_watermark`` the earliest time of any event from
the block's start on, among those projected so far. Both grow with the block,
so one index probe each turns a time window into a notification-id range that
holds every event of the window (at most a block wider at each end), and the
window's page is read in notification order from there, however long the trail.
(An index on ``recorded_at`` cannot give notification order, and scanning in
notification order while filtering on time reads every earlier event first.)
Kept per event, the low watermark of every recent row would be rewritten
whenever concurrent writers interleave their times (most batches); per block,
that is a row or two. The blocks depend only on the events, not on how they
were batched, so a rebuild writes the same ones.

A row keeps a ``summary`` of the payload: the payload itself, except that any
field whose canonical JSON exceeds 2 KB is replaced by ``sha256:<hex>`` of that
JSON, so the trail stays small and the full value can still be matched against
the event. Events of models, model versions and deployments carry the model's
name; those whose payload does not name it get it from ``audit_aggregate_models``,
filled when the aggregate's first event (which always names it) is seen.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.deployment import Deployment
from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from domain.integrity.sealing import ENVELOPE_VERSION
from domain.model import Model, ModelVersion
from projections.base import ProjectedEvent, Projection, insert_rows
from projections.tables import json_text, metadata

SUMMARY_FIELD_LIMIT = 2048

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("aggregate_type", sa.String(100), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_events_actor", "actor", "notification_id"),
    sa.Index("ix_audit_events_aggregate", "aggregate_id", "notification_id"),
    sa.Index("ix_audit_events_event_type", "event_type", "notification_id"),
    sa.Index("ix_audit_events_model_name", "model_name", "notification_id"),
)

TIME_BLOCK = 1024
"""Notification ids per row of ``audit_time_blocks`` (migration 0013 filled the table with this size)."""

audit_time_blocks = sa.Table(
    "audit_time_blocks",
    metadata,
    sa.Column("block", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("high_watermark", sa.String(32), nullable=False),
    sa.Column("low_watermark", sa.String(32), nullable=False),
    sa.Index("ix_audit_time_blocks_high_watermark", "high_watermark", "block"),
    sa.Index("ix_audit_time_blocks_low_watermark", "low_watermark", "block"),
)

audit_aggregate_models = sa.Table(
    "audit_aggregate_models",
    metadata,
    sa.Column("aggregate_id", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(200), nullable=False),
)

# The first event of each model-bearing aggregate, and the payload field naming the model.
_NAMING_EVENTS = {
    Model.Created.TOPIC: "name",
    ModelVersion.Registered.TOPIC: "model_name",
    Deployment.Created.TOPIC: "model_name",
}
_MODEL_AGGREGATES = {"Model", "ModelVersion", "Deployment"}


def short_event_type(topic: str) -> str:
    """The class-like name of a topic: ``mlledger.modelversion.ApprovalGranted.v1`` -> ``ApprovalGranted``."""
    parts = topic.split(".")
    if len(parts) >= 2 and parts[-1][:1] == "v" and parts[-1][1:].isdigit():
        return parts[-2]
    return parts[-1]


def _field_json(value: Any) -> bytes:
    try:
        return canonical_json(value)
    except InvalidPayload:  # e.g. an integer over 2**53 read back from a canonical float
        return json_text(value).encode()


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with every field over 2 KB (canonical JSON) replaced by its sha256."""
    summary: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, (dict, list, str)):
            encoded = _field_json(value)
            if len(encoded) > SUMMARY_FIELD_LIMIT:
                value = "sha256:" + hashlib.sha256(encoded).hexdigest()
        summary[key] = value
    return summary


def payload_json(event: ProjectedEvent) -> str:
    """The payload's canonical JSON, cut from the event's canonical envelope bytes.

    Re-encoding every payload would double the cost of this projection. In the
    envelope (keys sorted) the payload follows ``actor``, ``aggregate_id`` and
    ``aggregate_type``, whose string values cannot hold an unescaped quote, and is
    followed by ``prev_hash``, ``recorded_at``, ``type``, ``v`` and ``version``,
    which cannot either; so the first ``"payload":`` and the last
    ``,"prev_hash":"`` bound exactly the bytes that were hashed for the payload.
    """
    envelope = event.sealed.envelope
    start, end = envelope.find(b'"payload":'), envelope.rfind(b',"prev_hash":"')
    if event.envelope.get("v") != ENVELOPE_VERSION or start < 0 or end < start:
        return json_text(event.payload)
    return envelope[start + len(b'"payload":') : end].decode()


class AuditTrail(Projection):
    """Keeps ``audit_events``: every event with its actor, time, type and model (and the time blocks)."""

    name = "audit_trail"
    tables = (audit_events, audit_time_blocks, audit_aggregate_models)

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._model_rows: list[dict[str, Any]] = []
        # aggregate id -> model name never changes, so this cache cannot go stale.
        self._models: dict[str, str] = {}
        self._last_block: int | None = None
        self._high_before = ""

    def begin_batch(self, conn: Connection) -> None:
        """Start the batch with empty buffers, the trail's last time block and its high watermark."""
        self._rows, self._model_rows = [], []
        if len(self._models) > 100_000:
            self._models.clear()
        t = audit_time_blocks
        latest = conn.execute(sa.select(t.c.block, t.c.high_watermark).order_by(t.c.block.desc()).limit(1)).first()
        self._last_block, self._high_before = (latest.block, latest.high_watermark) if latest else (None, "")

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Buffer the event's row (written in :meth:`end_batch`)."""
        envelope = event.envelope
        # Only an event larger than the field limit as a whole can hold a field over it.
        summary = summarize(event.payload) if len(event.sealed.envelope) > SUMMARY_FIELD_LIMIT else None
        self._rows.append(
            {
                "notification_id": event.notification_id,
                "aggregate_id": event.aggregate_id,
                "aggregate_type": str(envelope["aggregate_type"]),
                "version": event.version,
                "event_type": short_event_type(event.topic),
                "topic": event.topic,
                "actor": event.actor,
                "recorded_at": event.recorded_at,
                "model_name": self._model_name(conn, event),
                "summary": (payload_json(event) if summary is None or summary == event.payload else json_text(summary)),
                "hash": event.hash,
            }
        )

    def end_batch(self, conn: Connection) -> None:
        """Write the batch's time blocks, then its rows."""
        if self._model_rows:
            insert_rows(conn, audit_aggregate_models, self._model_rows)
        if self._rows:
            self._write_time_blocks(conn)
            insert_rows(conn, audit_events, self._rows)
        self._rows, self._model_rows = [], []

    def _write_time_blocks(self, conn: Connection) -> None:
        """Raise the high watermarks of the batch's blocks and lower the low ones it reaches back to."""
        latest: dict[int, str] = {}
        earliest: dict[int, str] = {}
        for row in self._rows:  # in notification order, so the blocks come in ascending order
            block, at = row["notification_id"] // TIME_BLOCK, row["recorded_at"]
            latest[block] = max(latest.get(block, at), at)
            earliest[block] = min(earliest.get(block, at), at)
        blocks = list(latest)
        highs, lows, high, low = {}, {}, self._high_before, earliest[blocks[-1]]
        for block in blocks:
            high = highs[block] = max(high, latest[block])
        for block in reversed(blocks):
            low = lows[block] = min(low, earliest[block])
        t = audit_time_blocks
        # Earlier blocks whose later events now include an older time: none unless this batch
        # holds a time older than the latest before it. The value is inlined so that PostgreSQL
        # plans an index range scan, never a generic sequential scan.
        if low < self._high_before:
            below: sa.BindParameter[str] = sa.bindparam("low", low, literal_execute=True)
            conn.execute(t.update().where(t.c.low_watermark > below).values(low_watermark=low))
        if blocks[0] == self._last_block:  # its low watermark is already right (lowered just above if need be)
            conn.execute(t.update().where(t.c.block == blocks[0]).values(high_watermark=highs[blocks[0]]))
            blocks = blocks[1:]
        if blocks:
            conn.execute(
                t.insert(), [{"block": b, "high_watermark": highs[b], "low_watermark": lows[b]} for b in blocks]
            )

    def reset(self, conn: Connection) -> None:
        """Delete every row and forget cached model names."""
        super().reset(conn)
        self._models.clear()

    def _model_name(self, conn: Connection, event: ProjectedEvent) -> str | None:
        field = _NAMING_EVENTS.get(event.topic)
        if field is not None:
            named = str(event.payload[field])
            self._models[event.aggregate_id] = named
            self._model_rows.append({"aggregate_id": event.aggregate_id, "model_name": named})
            return named
        if event.envelope["aggregate_type"] not in _MODEL_AGGREGATES:
            return None
        cached = self._models.get(event.aggregate_id)
        if cached is not None:
            return cached
        name: str | None = conn.execute(
            sa.select(audit_aggregate_models.c.model_name).where(
                audit_aggregate_models.c.aggregate_id == event.aggregate_id
            )
        ).scalar()
        if name is not None:
            self._models[event.aggregate_id] = name
        return name
