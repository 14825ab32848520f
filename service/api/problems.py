"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy.exc
from eventsourcing import persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import LedgerError
from service.api.errors import DatabaseUnavailable, http_status

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://mlledger.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the API is reported."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


_DESCRIPTIONS = {
    400: "Bad request",
    401: "No valid API key",
    403: "The caller's roles do not allow this",
    404: "Not found",
    409: "Conflicts with the ledger's state or rules",
    413: "Too large",
    422: "Invalid input (the problem names the field)",
    503: "Temporarily unavailable",
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for code, text in _DESCRIPTIONS.items()
}


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def document(app: FastAPI) -> None:
    """Describe every error response as problem+json in the OpenAPI document."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                if operation.pop("x-own-errors", False):
                    continue  # an API of another shape (MLflow's) documents its own errors
                responses = operation.setdefault("responses", {})
                for code, response in PROBLEM_RESPONSES.items():
                    responses[str(code)] = response
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Register the exception handlers and document them."""
    document(app)

    @app.exception_handler(LedgerError)
    async def _ledger_error(_: Request, exc: LedgerError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            log.error("ledger error: %s", exc.detail)
        response = problem(status, exc.title, exc.detail, exc.type_slug, field=exc.field)
        if status == 503:  # temporarily unavailable: say when to come back
            response.headers.setdefault("Retry-After", "1")
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        location = [str(p) for p in first.get("loc", ())]
        field = ".".join(location[1:]) if len(location) > 1 else ".".join(location)
        return problem(
            422,
            "Invalid request",
            f"{field or 'request'}: {first.get('msg')}",
            "invalid-request",
            field=field or None,
            errors=[{"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg")} for e in errors],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        response = problem(
            exc.status_code,
            title.get(exc.status_code, "Error"),
            str(exc.detail),
            title.get(exc.status_code, "error").lower().replace(" ", "-"),
        )
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if _database_lost(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            lost = DatabaseUnavailable(
                "the database connection failed or was closed while this request ran; retry it "
                "(a write with a request id is recorded at most once)"
            )
            response = await _ledger_error(request, lost)
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unexpected error")
        return problem(500, "Internal error", "an unexpected error occurred; it was logged", "internal")


def _database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or refused database connection."""
    lost = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        persistence.OperationalError,
        persistence.InterfaceError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
    )
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, lost) or (isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
