"""Decision lookup: find a prediction by its id or by the request id that asked
for it, and show the decision as ``service.serving.decisions.reconstruct``
rebuilds it from the ledger (input unless erased, output, reasons, model
version and lineage, approvals, deployment in force, overrides, outcome, and
the inclusion proof of its event)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from domain.errors import InvalidPayload, NotFound
from domain.permissions import Action
from projections import registry_queries as q
from service.api.errors import http_status
from service.console.model_view import approval_views
from service.console.web import ConsoleRoute, ServicesDep, Viewer, page, render
from service.serving.decisions import Decision, reconstruct
from service.serving.runtime import Serving

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=200)]


def serving_of(request: Request) -> Serving:
    """The process's serving parts (the subject key vault decrypts inputs)."""
    serving: Serving = request.app.state.serving
    return serving


@router.get("/decisions", response_class=HTMLResponse)
def decisions(
    request: Request,
    viewer: Annotated[Viewer, Depends(page(Action.READ_DECISIONS))],
    services: ServicesDep,
    serving: Annotated[Serving, Depends(serving_of)],
    prediction_id: Text = None,
    request_id: Text = None,
    model: Text = None,
) -> Response:
    """The lookup form and, when asked, the reconstructed decision."""
    asked = {
        "prediction_id": (prediction_id or "").strip(),
        "request_id": (request_id or "").strip(),
        "model": (model or "").strip(),
    }
    reference = asked["prediction_id"] or asked["request_id"]
    decision: Decision | None = None
    error, status = None, 200
    context: dict[str, object] = {}
    if reference:
        with services.engine.connect() as conn:
            try:
                decision = reconstruct(conn, services.ledger, serving.vault, reference, asked["model"] or None)
            except (NotFound, InvalidPayload) as exc:
                error, status = exc.detail, http_status(exc)
            if decision is not None:
                version = q.model_version(conn, decision.model_name, decision.version)
                context["approvals"] = [] if version is None else approval_views(conn, version)
                context["names"] = {p.id: p.name for p in q.list_principals(conn)}
    return render(
        request,
        "decisions.html",
        status_code=status,
        title="Decisions",
        asked=asked,
        decision=decision,
        error=error,
        **context,
    )
