"""The audit trail, lineage and champion-at-time: what compliance officers ask."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from domain.errors import NotFound
from projections import audit_queries as aq
from service.api.deps import AuditorCaller, ConnDep, LineageReader

router = APIRouter(prefix="/v1", tags=["audit"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]
Text = Annotated[str | None, Query(max_length=200)]


@router.get("/audit/events", response_model=aq.AuditPage)
def audit_events(
    caller: AuditorCaller,
    conn: ConnDep,
    aggregate_id: Text = None,
    type: Text = None,
    actor: Text = None,
    model: Text = None,
    since: Annotated[str | None, Query(max_length=40, description="RFC 3339, inclusive")] = None,
    until: Annotated[str | None, Query(max_length=40, description="RFC 3339, exclusive")] = None,
    cursor: Annotated[int | None, Query(ge=0, le=2**62, description="next_after of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> aq.AuditPage:
    """Events matching every filter, oldest first; page with ``cursor`` (stable while events are written)."""
    return aq.audit_events(
        conn,
        aggregate_id=aggregate_id,
        event_type=type,
        actor=actor,
        model=model,
        since=since,
        until=until,
        after=cursor,
        limit=limit,
    )


@router.get("/models/{name}/versions/{version}/lineage", response_model=aq.Lineage)
def lineage(name: NamePath, version: VersionPath, caller: LineageReader, conn: ConnDep) -> aq.Lineage:
    """Everything behind a model version: data, code, pipeline, run, approvals, deployments."""
    found = aq.lineage(conn, name, version)
    if found is None:
        raise NotFound(f"model {name} has no version {version} (or it is not projected yet)", field="version")
    return found


@router.get("/models/{name}/champion", response_model=aq.ChampionAt)
def champion_at(
    name: NamePath,
    caller: LineageReader,
    conn: ConnDep,
    at: Annotated[str, Query(min_length=1, max_length=40, description="RFC 3339 moment")],
) -> aq.ChampionAt:
    """Which version served as champion at a past moment, answered from the log."""
    return aq.champion_at(conn, name, at)
