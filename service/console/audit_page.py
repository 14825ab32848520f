"""The audit-trail timeline: every event, oldest first, with the filters of
``GET /v1/audit/events`` (aggregate, type, actor, model, time range) and cursor
pages, read from the audit-trail projection through ``projections.audit_queries``.

The console adds two conveniences over the API: the actor may be given by
name as well as by principal id, and a time without an offset is taken as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from domain import catalog
from domain.errors import InvalidPayload
from domain.integrity.sealing import format_timestamp
from domain.permissions import Action
from projections import audit_queries as aq
from projections import registry_queries as q
from projections.audit_trail import short_event_type
from service.console.web import ConsoleRoute, ServicesDep, Viewer, page, render

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=200)]
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
FILTERS = ("aggregate_id", "type", "actor", "model", "since", "until")


def event_types() -> list[str]:
    """Short names of every event type the ledger records (for the type filter's suggestions)."""
    topics = (getattr(member, "TOPIC", None) for aggregate in catalog.AGGREGATES for member in vars(aggregate).values())
    names = {short_event_type(topic) for topic in topics if isinstance(topic, str)}
    return sorted(names)


def as_utc(text: str, field: str) -> str:
    """An RFC 3339 time; one without an offset is read as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidPayload(
            f"{field} must be a time such as 2026-11-22T10:00:00Z, got {text!r}", field=field
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_timestamp(moment)


def _number(text: str | None, field: str, low: int, high: int, default: int | None) -> int | None:
    if text is None:
        return default
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise InvalidPayload(f"{field} must be a whole number from {low} to {high}", field=field)
    return int(text)


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request,
    viewer: Annotated[Viewer, Depends(page(Action.READ_AUDIT))],
    services: ServicesDep,
    aggregate_id: Text = None,
    type: Text = None,
    actor: Text = None,
    model: Text = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[str | None, Query(max_length=5)] = None,
) -> Response:
    """The filtered timeline, one page at a time."""
    given = {"aggregate_id": aggregate_id, "type": type, "actor": actor, "model": model, "since": since, "until": until}
    filters = {name: value.strip() for name, value in given.items() if value and value.strip()}
    with services.engine.connect() as conn:
        principals = q.list_principals(conn)
        names = {p.id: p.name for p in principals}
        ids_by_name = {p.name: p.id for p in principals}
        models = [m.name for m in q.list_models(conn)]
        error = None
        result = aq.AuditPage(events=[], next_after=None)
        try:
            after = _number(cursor, "cursor", 0, 2**62, None)
            size = _number(limit, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT
            actor_id = filters.get("actor")
            result = aq.audit_events(
                conn,
                aggregate_id=filters.get("aggregate_id"),
                event_type=filters.get("type"),
                actor=ids_by_name.get(actor_id, actor_id) if actor_id else None,
                model=filters.get("model"),
                since=as_utc(filters["since"], "since") if "since" in filters else None,
                until=as_utc(filters["until"], "until") if "until" in filters else None,
                after=after,
                limit=size,
            )
        except InvalidPayload as exc:
            error, after, size = exc.detail, None, DEFAULT_LIMIT
    keep: dict[str, Any] = dict(filters)
    if size != DEFAULT_LIMIT:
        keep["limit"] = size
    return render(
        request,
        "audit.html",
        status_code=422 if error else 200,
        title="Audit trail",
        error=error,
        filters=filters,
        limit=size,
        cursor=after,
        events=result.events,
        names=names,
        event_types=event_types(),
        models=models,
        principals=principals,
        next_href=None
        if result.next_after is None
        else "/console/audit?" + urlencode(keep | {"cursor": result.next_after}),
        first_href="/console/audit?" + urlencode(keep) if after is not None else None,
        api_query=urlencode({k: v for k, v in keep.items()} | ({"cursor": after} if after is not None else {})),
    )
