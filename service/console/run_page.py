"""The run page: what a run was asked to do, how it went, what it produced,
what it used (CPU, memory, wall and GPU time, where it ran) and what that cost
at the configured rates, and the model versions registered from it."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse

from domain.errors import NotFound
from domain.permissions import Action
from domain.usage import gb_hours
from projections import registry as r
from projections import registry_queries as q
from projections.usage_queries import run_cost
from service.console.web import ConsoleRoute, ServicesDep, Viewer, page, render

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
RunReader = Annotated[Viewer, Depends(page(Action.READ_LINEAGE))]
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, viewer: RunReader, services: ServicesDep, run_id: IdPath) -> Response:
    """One run with its resources and cost."""
    with services.engine.connect() as conn:
        run = q.run(conn, run_id)
        if run is None:
            raise NotFound(f"there is no run {run_id!r} (or it is not projected yet)")
        v = r.reg_model_versions
        versions = conn.execute(
            sa.select(v.c.model_name, v.c.number).where(v.c.run_id == run_id).order_by(v.c.model_name, v.c.number)
        ).all()
        submitter = q.principal(conn, run.submitted_by)
        context: dict[str, Any] = {
            "run": run,
            "metrics": q.final_metrics(conn, run_id),
            "artifacts": q.run_artifacts(conn, run_id),
            "versions": versions,
            "submitter": submitter.name if submitter else run.submitted_by,
            "cost": run_cost(run.resources, services.settings.rates),
            "gb_hours": None if run.resources is None else float(gb_hours(run.resources)),
        }
    return render(request, "run.html", title=f"Run {run.name or run.id}", **context)
