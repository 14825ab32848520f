"""Decision lookup: find a prediction by its id or by the request id that asked
for it, and show the decision as reconstructed from the ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from domain.permissions import Action
from service.console.web import ConsoleRoute, ServicesDep, Viewer, page, render

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=200)]


@router.get("/decisions", response_class=HTMLResponse)
def decisions(
    request: Request,
    viewer: Annotated[Viewer, Depends(page(Action.READ_AUDIT))],
    services: ServicesDep,
    prediction_id: Text = None,
    request_id: Text = None,
) -> Response:
    """The lookup form and, when asked, the reconstructed decision."""
    asked = {"prediction_id": (prediction_id or "").strip(), "request_id": (request_id or "").strip()}
    return render(request, "decisions.html", title="Decisions", asked=asked, available=False, decision=None,
                  error=None)
