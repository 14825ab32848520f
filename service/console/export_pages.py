"""Export bundles from the console: the model page's export button builds one
through ``service.exports.bundle.export_bundle`` (the function behind
``POST /v1/exports``), the exports page lists the bundles the viewer may see,
and a download streams the digest-checked archive after recording the download
in the ledger, with the response ``GET /v1/exports/{id}/bundle`` gives
(``service.api.routers.exports.bundle_response``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from domain.errors import InvalidPayload, LedgerError
from domain.permissions import Action
from service.api.errors import http_status
from service.api.routers.exports import bundle_response
from service.console.audit_page import as_utc
from service.console.model_pages import model_page_response
from service.console.web import ConsoleRoute, ServicesDep, Viewer, check_csrf, page, render
from service.exports import store
from service.exports.bundle import export_bundle
from service.exports.scope import ExportRequest

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
Exporter = Annotated[Viewer, Depends(page(Action.EXPORT))]
ExportReader = Annotated[Viewer, Depends(page(Action.READ_EXPORTS))]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
PREDICTIONS = ("all", "sample", "none")


def _request(
    name: str, predictions: str, sample_size: str, since: str, until: str, share_with: list[str]
) -> ExportRequest:
    if predictions not in PREDICTIONS:
        raise InvalidPayload("predictions must be all, sample or none", field="predictions")
    if not sample_size.strip().isdigit() or not 1 <= int(sample_size) <= 1_000_000:
        raise InvalidPayload("the sample size must be a whole number from 1 to 1,000,000", field="sample_size")
    return ExportRequest.of(
        name,
        as_utc(since, "from") if since.strip() else None,
        as_utc(until, "to") if until.strip() else None,
        predictions,
        int(sample_size),
        [p for p in share_with if p],
    )


@router.post("/models/{name}/export", response_class=HTMLResponse)
def start_export(
    request: Request,
    viewer: Exporter,
    services: ServicesDep,
    name: NamePath,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    predictions: Annotated[str, Form(max_length=10)] = "all",
    sample_size: Annotated[str, Form(max_length=10)] = "1000",
    since: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=40)] = "",
    share_with: Annotated[list[str] | None, Form(max_length=100)] = None,
) -> Response:
    """Build and record an export bundle of the model, then show it on the model page."""
    check_csrf(viewer, csrf_token)
    try:
        wanted = _request(name, predictions, sample_size, since, until, share_with or [])
        result = export_bundle(services, wanted, actor=viewer.caller.actor)
    except LedgerError as exc:
        status = http_status(exc)
        if status >= 500:
            raise
        return model_page_response(request, viewer, services, name, export_error=exc.detail, status_code=status)
    return RedirectResponse(f"/console/models/{name}?export={result.export_id}#export", status_code=303)


@router.get("/exports", response_class=HTMLResponse)
def exports(request: Request, viewer: ExportReader, services: ServicesDep) -> Response:
    """Every export bundle the viewer may see (a regulator: those shared with them)."""
    visible = store.visible_exports(services, viewer.caller.id, viewer.caller.roles)
    return render(
        request, "exports.html", title="Exports", exports=list(reversed(visible)), can_export=viewer.can(Action.EXPORT)
    )


@router.get("/exports/{export_id}/bundle")
def download(
    viewer: ExportReader, services: ServicesDep, export_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    """The bundle (zip); the download is recorded in the ledger first."""
    return bundle_response(services, export_id, viewer.caller)
