"""Liveness and readiness probes, and the service's metrics for Prometheus."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from domain.permissions import Action
from service.api.deps import ServicesDep, require
from service.application.auth import Caller
from service.ops.projector import ProjectionLag, projection_lag

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """The database answers; reports how far each read model (the Merkle log included) lags behind the
    log, in events and in seconds (the age of the oldest event it has not applied)."""
    try:
        with services.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        lag = projection_lag(services)
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": type(exc).__name__}, status_code=503)
    return JSONResponse(
        {
            "status": "ok",
            "position": lag.position,
            "projection_lag": lag.events,
            "projection_lag_seconds": {name: round(s, 3) for name, s in lag.seconds.items()},
            "oldest_unprojected_seconds": round(lag.oldest_seconds, 3),
        }
    )


def prometheus_text(lag: ProjectionLag) -> str:
    """The lag in the Prometheus text exposition format."""
    lines = [
        "# HELP mlledger_ledger_position Notification id of the newest event of the ledger.",
        "# TYPE mlledger_ledger_position gauge",
        f"mlledger_ledger_position {lag.position}",
        "# HELP mlledger_projection_lag_events Events of the ledger a read model has not applied yet.",
        "# TYPE mlledger_projection_lag_events gauge",
        *(f'mlledger_projection_lag_events{{read_model="{name}"}} {n}' for name, n in sorted(lag.events.items())),
        "# HELP mlledger_projection_lag_seconds Age of the oldest event a read model has not applied yet.",
        "# TYPE mlledger_projection_lag_seconds gauge",
        *(f'mlledger_projection_lag_seconds{{read_model="{name}"}} {s:.3f}' for name, s in sorted(lag.seconds.items())),
        "# HELP mlledger_oldest_unprojected_event_seconds Age of the oldest event some read model has not applied.",
        "# TYPE mlledger_oldest_unprojected_event_seconds gauge",
        f"mlledger_oldest_unprojected_event_seconds {lag.oldest_seconds:.3f}",
    ]
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(
    services: ServicesDep, _caller: Annotated[Caller, Depends(require(Action.CHECK_MONITORING))]
) -> PlainTextResponse:
    """Each read model's lag (the Merkle log is ``transparency_log``), for Prometheus (admin or operator key)."""
    return PlainTextResponse(prometheus_text(projection_lag(services)), media_type=PROMETHEUS_TEXT)
