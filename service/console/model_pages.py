"""The models list and the model page: versions with their approval state, the
lineage of one version (graph and details), approvals with signer and
signature status, deployment history, monitoring, reports and the export button."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from domain.errors import NotFound
from domain.permissions import Action
from domain.roles import Role
from domain.usage import gb_hours
from projections import audit_queries as aq
from projections import registry_queries as q
from projections.usage_queries import run_cost, version_costs
from service.bootstrap import Services
from service.console.model_view import approval_views, lineage_graph
from service.console.monitoring_view import monitoring_view, reports_of
from service.console.svg import lineage_svg
from service.console.web import ConsoleRoute, ServicesDep, Viewer, page, render
from service.exports import store

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
ModelReader = Annotated[Viewer, Depends(page(Action.READ_LINEAGE))]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
DEFAULT_WINDOW = 100


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, viewer: ModelReader, services: ServicesDep) -> Response:
    """Every model with its newest version and what serves it now."""
    rows: list[dict[str, Any]] = []
    with services.engine.connect() as conn:
        for model in q.list_models(conn):
            versions = q.model_versions(conn, model.name)
            rows.append(
                {
                    "model": model,
                    "versions": versions,
                    "latest": versions[-1] if versions else None,
                    "deployment": q.deployment(conn, model.name),
                }
            )
    return render(request, "models.html", title="Models", rows=rows)


@router.get("/models/{name}", response_class=HTMLResponse)
def model_page(
    request: Request,
    viewer: ModelReader,
    services: ServicesDep,
    name: NamePath,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    window: Annotated[int, Query(ge=10, le=100_000)] = DEFAULT_WINDOW,
    export: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """One model; the lineage and reports shown are of ``version`` (default: the newest).

    Live accuracy is computed over windows of ``window`` predictions with outcomes;
    ``export`` names an export just built from this page, to show its result.
    """
    return model_page_response(request, viewer, services, name, version, window, export_id=export)


def model_page_response(
    request: Request,
    viewer: Viewer,
    services: Services,
    name: str,
    version: int | None = None,
    window: int = DEFAULT_WINDOW,
    *,
    export_id: str | None = None,
    export_error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The model page (also shown again, with the error, when an export could not be built)."""
    with services.engine.connect() as conn:
        model = q.model(conn, name)
        versions = q.model_versions(conn, name)
        if model is None and not versions:
            raise NotFound(f"there is no model named {name!r} (or it is not projected yet)")
        number = version or (versions[-1].number if versions else None)
        lineage = aq.lineage(conn, name, number) if number is not None else None
        if version is not None and lineage is None:
            raise NotFound(f"model {name!r} has no version {version}")
        principals = q.list_principals(conn)
        context: dict[str, Any] = {
            "model": model,
            "versions": versions,
            "deployment": q.deployment(conn, name),
            "history": q.deployment_history(conn, name),
            "lineage": lineage,
            "names": {p.id: p.name for p in principals},
            "window": window,
            "monitoring": monitoring_view(conn, name, window, services.settings.psi_threshold),
            "reports": {} if lineage is None else reports_of(conn, services.blobs, lineage.version.id),
            "costs": version_costs(conn, name, services.settings.rates),
        }
        source = lineage.run if lineage is not None else None
        resources = source.resources if source is not None else None
        context["run_cost"] = run_cost(resources, services.settings.rates)
        context["run_gb_hours"] = None if resources is None else float(gb_hours(resources))
        if lineage is not None:
            context["approvals"] = approval_views(conn, lineage.version)
            label = f"lineage of {name} version {lineage.version.number}"
            context["graph"] = lineage_svg(lineage_graph(lineage), label)
        else:
            context["approvals"], context["graph"] = [], None
    exports = []
    if viewer.can(Action.READ_EXPORTS):
        visible = store.visible_exports(services, viewer.caller.id, viewer.caller.roles)
        exports = [e for e in reversed(visible) if e.model_name == name]
    context.update(
        can_export=viewer.can(Action.EXPORT),
        can_read_exports=viewer.can(Action.READ_EXPORTS),
        exports=exports,
        new_export=next((e for e in exports if e.id == export_id), None),
        export_error=export_error,
        regulators=[p for p in principals if p.active and Role.REGULATOR.value in p.roles],
    )
    return render(request, "model.html", status_code=status_code, title=f"Model {name}", name=name, **context)
