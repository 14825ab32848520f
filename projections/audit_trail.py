"""The audit trail: one row per event, every event, indexed for the questions an
auditor asks (who did what, to which aggregate, of which type, about which
model, when), each answered in notification order with a cursor.

Time filters are answered through two watermarks per row, because an event's
``recorded_at`` (taken when the command ran) need not grow with its notification
id (given when it was stored): ``high_watermark`` is the latest time of this event
and every earlier one, ``low_watermark`` the earliest time of this event and every
later one projected so far. Both grow with the notification id, so one index probe
each turns a time window into a notification-id range that holds every event of
the window, and the window's page is read in notification order from there,
however long the trail. (An index on ``recorded_at`` cannot give notification
order, and scanning in notification order while filtering on time reads every
earlier event first.)

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
    sa.Column("high_watermark", sa.String(32), nullable=False),
    sa.Column("low_watermark", sa.String(32), nullable=False),
    sa.Index("ix_audit_events_high_watermark", "high_watermark", "notification_id"),
    sa.Index("ix_audit_events_low_watermark", "low_watermark", "notification_id"),
    sa.Index("ix_audit_events_actor", "actor", "notification_id"),
    sa.Index("ix_audit_events_aggregate", "aggregate_id", "notification_id"),
    sa.Index("ix_audit_events_event_type", "event_type", "notification_id"),
    sa.Index("ix_audit_events_model_name", "model_name", "notification_id"),
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
    """Keeps ``audit_events``: every event with its actor, time, type and model."""

    name = "audit_trail"
    tables = (audit_events, audit_aggregate_models)

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._model_rows: list[dict[str, Any]] = []
        # aggregate id -> model name never changes, so this cache cannot go stale.
        self._models: dict[str, str] = {}
        self._high = self._high_before = ""

    def begin_batch(self, conn: Connection) -> None:
        """Start the batch with empty buffers and the trail's high watermark."""
        self._rows, self._model_rows = [], []
        if len(self._models) > 100_000:
            self._models.clear()
        latest = sa.select(audit_events.c.high_watermark).order_by(audit_events.c.notification_id.desc()).limit(1)
        self._high = self._high_before = conn.execute(latest).scalar() or ""

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Buffer the event's row (written in :meth:`end_batch`)."""
        envelope = event.envelope
        # Only an event larger than the field limit as a whole can hold a field over it.
        summary = summarize(event.payload) if len(event.sealed.envelope) > SUMMARY_FIELD_LIMIT else None
        self._high = max(self._high, event.recorded_at)
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
                "high_watermark": self._high,
                "low_watermark": event.recorded_at,  # lowered in end_batch
            }
        )

    def end_batch(self, conn: Connection) -> None:
        """Set the low watermarks, then write the batch's rows."""
        if self._model_rows:
            insert_rows(conn, audit_aggregate_models, self._model_rows)
        if self._rows:
            low = self._rows[-1]["recorded_at"]
            for row in reversed(self._rows):
                low = row["low_watermark"] = min(low, row["recorded_at"])
            # Earlier rows whose later events now include an older time: none unless this
            # batch holds a time older than the latest one before it. The value is inlined
            # so that PostgreSQL plans an index range scan, never a generic sequential scan.
            if low < self._high_before:
                below: sa.BindParameter[str] = sa.bindparam("low", low, literal_execute=True)
                lowered = audit_events.update().where(audit_events.c.low_watermark > below)
                conn.execute(lowered.values(low_watermark=low))
            insert_rows(conn, audit_events, self._rows)
        self._rows, self._model_rows = [], []

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
