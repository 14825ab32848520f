"""The auditor's questions: what happened (filtered, paged by cursor), where a
model version came from (its lineage), and which version served at a moment.

Times are RFC 3339 text. Stored times all have the one form
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, so text order is time order; times given to
these functions are first brought to that form, whatever their offset or
precision, so that comparing them as text stays right.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from domain.errors import InvalidPayload
from domain.integrity.sealing import format_timestamp
from projections import audit_trail
from projections import registry as r
from projections import registry_queries as q


def normalize_time(text: str, field: str = "at") -> str:
    """An RFC 3339 time in the stored form (UTC, microseconds, ``Z``)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise InvalidPayload(f"{field} must be an RFC 3339 time, got {text!r}", field=field) from None
    if moment.tzinfo is None:
        raise InvalidPayload(f"{field} needs a time zone offset (for example Z), got {text!r}", field=field)
    return format_timestamp(moment.astimezone(UTC))


class AuditEvent(BaseModel):
    """One event as the audit trail keeps it."""

    notification_id: int
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    topic: str
    actor: str
    recorded_at: str
    model_name: str | None
    summary: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    """A page of events in notification order; pass ``next_after`` as ``after`` for the next page."""

    events: list[AuditEvent]
    next_after: int | None


def audit_events(
    conn: Connection,
    *,
    aggregate_id: str | None = None,
    event_type: str | None = None,
    actor: str | None = None,
    model: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> AuditPage:
    """Events matching every given filter, oldest first, after notification id ``after``.

    ``event_type`` is a short name (``ApprovalGranted``) or a full topic;
    ``since`` is inclusive and ``until`` exclusive. Notification ids only grow,
    so walking pages with ``next_after`` sees every matching event exactly once,
    including events recorded while walking.
    """
    q.check_limit(limit)
    start = None if since is None else normalize_time(since, "since")
    end = None if until is None else normalize_time(until, "until")
    t = audit_trail.audit_events
    query = sa.select(*t.c)
    if aggregate_id is not None:
        query = query.where(t.c.aggregate_id == aggregate_id)
    if event_type is not None:
        if "." in event_type:
            query = query.where(t.c.event_type == audit_trail.short_event_type(event_type), t.c.topic == event_type)
        else:
            query = query.where(t.c.event_type == event_type)
    if actor is not None:
        query = query.where(t.c.actor == actor)
    if model is not None:
        query = query.where(t.c.model_name == model)
    if start is not None or end is not None:
        span = _id_span(conn, start, end)
        if span is None:
            return AuditPage(events=[], next_after=None)
        query = query.where(t.c.notification_id.between(*span))
        if start is not None:
            query = query.where(t.c.recorded_at >= start)
        if end is not None:
            query = query.where(t.c.recorded_at < end)
    if after is not None:
        query = query.where(t.c.notification_id > after)
    rows = conn.execute(query.order_by(t.c.notification_id).limit(limit + 1)).all()
    events = [
        AuditEvent.model_validate(dict(row._mapping) | {"summary": json.loads(row.summary)}) for row in rows[:limit]
    ]
    return AuditPage(events=events, next_after=events[-1].notification_id if len(rows) > limit else None)


def _id_span(conn: Connection, start: str | None, end: str | None) -> tuple[int, int] | None:
    """Notification ids that hold every event recorded in [start, end), or None if none can be.

    An event at or after ``start`` lies in a block whose high watermark reaches
    ``start``, and the high watermark grows with the block: the first block whose
    watermark reaches ``start`` bounds the window from below. Symmetrically, the
    last block whose low watermark is before ``end`` bounds it from above.
    """
    t = audit_trail.audit_time_blocks
    size = audit_trail.TIME_BLOCK
    first, last = 0, 2**63 - 1
    if start is not None:
        found = conn.execute(
            sa.select(t.c.block).where(t.c.high_watermark >= start).order_by(t.c.high_watermark, t.c.block).limit(1)
        ).scalar()
        if found is None:
            return None
        first = found * size
    if end is not None:
        found = conn.execute(
            sa.select(t.c.block)
            .where(t.c.low_watermark < end)
            .order_by(t.c.low_watermark.desc(), t.c.block.desc())
            .limit(1)
        ).scalar()
        if found is None:
            return None
        last = (found + 1) * size - 1
    return (first, last) if first <= last else None


class RunLineage(q.RunPublic):
    """The source run of a version, with what it produced."""

    final_metrics: dict[str, q.MetricPoint]
    artifacts: list[q.ArtifactPublic]
    environment: dict[str, Any] | None = None
    """The runner's captured environment (not recorded yet)."""


class Lineage(BaseModel):
    """Everything a model version comes from and everything decided about it."""

    model: q.ModelPublic | None
    version: q.ModelVersionPublic
    run: RunLineage | None
    datasets: list[q.DatasetVersionPublic]
    code_version: q.CodeVersionPublic | None
    pipeline: q.PipelineSpecPublic | None
    approvals: list[q.ApprovalPublic]
    deployment_history: list[q.DeploymentChange]


def lineage(conn: Connection, model_name: str, number: int) -> Lineage | None:
    """The chain behind version ``number`` of a model, or None if there is no such version."""
    version = q.model_version(conn, model_name, number)
    if version is None:
        return None
    source = q.run(conn, version.run_id)
    run_lineage = None
    datasets: list[q.DatasetVersionPublic] = []
    code = spec = None
    if source is not None:
        run_lineage = RunLineage(
            **source.model_dump(),
            final_metrics=q.final_metrics(conn, source.id),
            artifacts=q.run_artifacts(conn, source.id),
        )
        datasets = q.dataset_versions_by_id(conn, source.dataset_version_ids)
        if source.code_version_id is not None:
            code = q.code_version(conn, source.code_version_id)
        if source.pipeline_name is not None:
            spec = q.pipeline(conn, source.pipeline_name, source.pipeline_version)
    return Lineage(
        model=q.model(conn, model_name),
        version=version,
        run=run_lineage,
        datasets=datasets,
        code_version=code,
        pipeline=spec,
        approvals=q.approvals(conn, version.id),
        deployment_history=q.deployment_history(conn, model_name),
    )


class ChampionAt(BaseModel):
    """Which version served a model as champion at a moment."""

    model_name: str
    at: str
    model_version_id: str | None
    number: int | None
    stopped: bool
    """The kill switch was pulled at that moment (nothing was served)."""
    retired: bool
    decided_by: int | None
    """Notification id of the deciding event (the champion, rollback or retire), if any."""
    decided_at: str | None


def _latest(
    conn: Connection, model_name: str, at: str, actions: tuple[str, ...]
) -> sa.Row[int, str, str | None, int | None, str] | None:
    t = r.reg_deployment_history
    query = (
        sa.select(t.c.notification_id, t.c.action, t.c.model_version_id, t.c.number, t.c.recorded_at)
        .where(t.c.model_name == model_name, t.c.recorded_at <= at, t.c.action.in_(actions))
        .order_by(t.c.recorded_at.desc(), t.c.notification_id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def champion_at(conn: Connection, model_name: str, at: str) -> ChampionAt:
    """The champion of ``model_name`` at ``at`` (inclusive): None before any or after retirement."""
    moment = normalize_time(at)
    decided = _latest(conn, model_name, moment, ("champion", "rollback", "retire"))
    switch = _latest(conn, model_name, moment, ("stop", "resume"))
    serving = decided is not None and decided.action != "retire"
    return ChampionAt(
        model_name=model_name,
        at=moment,
        model_version_id=decided.model_version_id if serving and decided is not None else None,
        number=decided.number if serving and decided is not None else None,
        stopped=switch is not None and switch.action == "stop",
        retired=decided is not None and decided.action == "retire",
        decided_by=None if decided is None else decided.notification_id,
        decided_at=None if decided is None else decided.recorded_at,
    )
