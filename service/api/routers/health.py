"""Liveness and readiness probes."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """The database answers; reports how far the projections lag behind the log."""
    try:
        with services.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        head = services.ledger.position()
        lag = {name: head - services.runner.position(name) for name in services.runner.projections}
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "position": head, "projection_lag": lag})
