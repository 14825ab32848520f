"""Model reports (explanations, fairness) and monitoring (drift, live accuracy)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import NotFound
from projections.prediction_queries import Monitoring, ReportPublic, monitoring, published_reports
from projections.registry_queries import model_version
from service.api.deps import ConnDep, LineageReader, MonitoringChecker, ServicesDep
from service.api.routers.predictions import ServingDep
from service.serving.monitor import DriftCheck

router = APIRouter(prefix="/v1/models", tags=["monitoring"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]


def _report(conn: Any, name: str, version: int, kind: str) -> ReportPublic:
    found = model_version(conn, name, version)
    if found is None:
        raise NotFound(f"model {name} has no version {version}", field="version")
    report = published_reports(conn, found.id, [kind]).get(kind)
    if report is None:
        raise NotFound(
            f"{name} v{version} has no {kind} report yet; reports are computed in the background after registration",
            field="version",
        )
    return report


@router.get(
    "/{name}/versions/{version}/explanations",
    response_model=ReportPublic,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
def explanations(
    name: NamePath,
    version: VersionPath,
    caller: LineageReader,
    conn: ConnDep,
    services: ServicesDep,
    format: Annotated[Literal["json", "html"], Query(description="json (default) or the HTML page")] = "json",
) -> Any:
    """The global SHAP report of a version: mean |SHAP| per feature, plots, explainer and background digest."""
    report = _report(conn, name, version, "explanations")
    if format == "html":
        page = b"".join(services.blobs.read_verified(report.attachments["report.html"]))
        return HTMLResponse(page.decode())
    return report


@router.get("/{name}/versions/{version}/fairness", response_model=ReportPublic)
def fairness(name: NamePath, version: VersionPath, caller: LineageReader, conn: ConnDep) -> ReportPublic:
    """Selection rates, impact ratios, TPR and accuracy per protected group, on the validation data."""
    return _report(conn, name, version, "fairness")


@router.get("/{name}/monitoring", response_model=Monitoring)
def model_monitoring(
    name: NamePath,
    caller: LineageReader,
    conn: ConnDep,
    window: Annotated[int, Query(ge=10, le=100_000, description="predictions with outcomes per accuracy window")] = 100,
) -> Monitoring:
    """Serving figures per version, live accuracy per window, and drift alerts."""
    return monitoring(conn, name, window)


class CheckBody(BaseModel):
    """How many of the newest served inputs to compare."""

    model_config = ConfigDict(extra="forbid")

    window: int | None = Field(None, ge=30, le=100_000)


@router.post("/{name}/monitoring/check", response_model=DriftCheck)
def check_drift(
    name: NamePath, body: CheckBody, caller: MonitoringChecker, serving: ServingDep, conn: ConnDep, response: Response
) -> DriftCheck:
    """Compare the newest window of inputs with the training data now; a crossed threshold records DriftDetected.

    Pass ``min_position`` (the position of your last prediction) to include it in the window.
    """
    result = serving.monitor.check(name, body.window)
    if result.alert_position is not None:
        response.headers["X-Ledger-Position"] = str(result.alert_position)
    return result
