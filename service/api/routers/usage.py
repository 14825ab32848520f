"""Usage and cost: what runs used over a window, grouped by model, principal or pipeline."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from projections import usage_queries as u
from service.api.deps import ConnDep, LineageReader, ServicesDep

router = APIRouter(prefix="/v1", tags=["usage"])
TimeQuery = Annotated[
    str | None, Query(max_length=40, description="RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z")
]


@router.get("/usage", response_model=u.UsagePublic)
def usage(
    caller: LineageReader,
    conn: ConnDep,
    services: ServicesDep,
    group_by: Annotated[Literal["model", "principal", "pipeline"], Query(description="what to total per")],
    since: TimeQuery = None,
    until: TimeQuery = None,
) -> u.UsagePublic:
    """Runs, CPU and GPU seconds, GB-hours and cost per group, over the runs that finished
    in [``since``, ``until``) and recorded what they used; priced at the configured rates."""
    return u.usage(conn, services.settings.rates, group_by=group_by, since=since, until=until)
