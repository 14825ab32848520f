"""Dependency aliases shared by the routers: services, connections, the
authenticated caller, role checks and read-your-writes waits."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Connection

from domain.errors import InvalidPayload, PayloadTooLarge
from domain.permissions import Action
from service.api.errors import ProjectionsBehind
from service.application.auth import Caller, authenticate, authenticate_digest, remembered, token_digest
from service.application.commands.four_eyes import Outcome
from service.application.ledger import Ledger, Written
from service.bootstrap import Services

POSITION_HEADER = "X-Ledger-Position"


async def get_services(request: Request) -> Services:
    """The process's opened services."""
    services: Services = request.app.state.services
    return services


async def get_ledger(services: Annotated[Services, Depends(get_services)]) -> Ledger:
    """The ledger application."""
    return services.ledger


def bearer_token(request: Request) -> str | None:
    """The key of the ``Authorization: Bearer`` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def current_caller(request: Request, ledger: Annotated[Ledger, Depends(get_ledger)]) -> Caller:
    """The principal of the ``Authorization: Bearer`` API key (401 otherwise)."""
    return authenticate(ledger, bearer_token(request))


async def predicting_key(request: Request, ledger: Ledger) -> str:
    """The digest of the API key of a caller who may predict (401 or 403 otherwise), for the predict queue.

    A key this process authenticated before is judged here from memory, without
    leaving the event loop; the queue authenticates it afresh with the request,
    so a revocation recorded by any process still applies. A key new to this
    process is authenticated now, in a worker thread.
    """
    digest = token_digest(bearer_token(request))
    caller = remembered(ledger, digest)
    if caller is None:
        caller = await run_in_threadpool(authenticate_digest, ledger, digest)
    caller.require(Action.PREDICT)
    return digest


def require(action: Action) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets the caller through only if a role allows ``action``."""

    async def dependency(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        caller.require(action)
        return caller

    dependency.__name__ = f"require_{action.value}"
    return dependency


def read_connection(
    services: Annotated[Services, Depends(get_services)],
    min_position: Annotated[
        int | None,
        Query(ge=0, le=2**62, description="wait until read models include this ledger position"),
    ] = None,
) -> Iterator[Connection]:
    """A connection for queries, after the projections reached ``min_position``."""
    if min_position:
        head = services.ledger.position()
        if min_position > head:
            raise InvalidPayload(
                f"min_position {min_position} is beyond the ledger's newest position {head}", field="min_position"
            )
        deadline = time.monotonic() + services.settings.read_wait_seconds
        while min(services.runner.position(n) for n in services.runner.projections) < min_position:
            if time.monotonic() > deadline:
                raise ProjectionsBehind(
                    f"read models have not reached position {min_position} yet; retry shortly",
                    field="min_position",
                )
            time.sleep(0.02)
    with services.engine.connect() as conn:
        yield conn


def refuse_oversized(request: Request, limit: int, field: str) -> None:
    """413 before reading a body whose declared length is over ``limit`` (streaming still counts)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload exceeds the limit of {limit} bytes", field=field)


def written(response: Response, result: Written) -> dict[str, object]:
    """Set the position header and return the common write answer."""
    response.headers[POSITION_HEADER] = str(result.position)
    return {"id": result.id, "position": result.position}


def outcome(response: Response, result: Outcome) -> dict[str, object]:
    """The answer to a privileged request: 202 while a second admin must confirm it."""
    response.headers[POSITION_HEADER] = str(result.position)
    if result.pending:
        response.status_code = 202
    if result.api_key is not None:
        response.headers["Cache-Control"] = "no-store"
    return {"id": result.id, "position": result.position, "pending": result.pending, "api_key": result.api_key}


ServicesDep = Annotated[Services, Depends(get_services)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
ConnDep = Annotated[Connection, Depends(read_connection)]
CurrentCaller = Annotated[Caller, Depends(current_caller)]

AdminCaller = Annotated[Caller, Depends(require(Action.MANAGE_PRINCIPALS))]
LineageReader = Annotated[Caller, Depends(require(Action.READ_LINEAGE))]
LineageWriter = Annotated[Caller, Depends(require(Action.WRITE_LINEAGE))]
ApproverCaller = Annotated[Caller, Depends(require(Action.DECIDE_APPROVALS))]
OperatorCaller = Annotated[Caller, Depends(require(Action.MANAGE_DEPLOYMENTS))]
PolicyAdmin = Annotated[Caller, Depends(require(Action.MANAGE_POLICY))]
AuditorCaller = Annotated[Caller, Depends(require(Action.READ_AUDIT))]
LedgerEventReader = Annotated[Caller, Depends(require(Action.READ_LEDGER_EVENTS))]
Predictor = Annotated[Caller, Depends(require(Action.PREDICT))]
PredictionLogger = Annotated[Caller, Depends(require(Action.LOG_PREDICTIONS))]
OutcomeRecorder = Annotated[Caller, Depends(require(Action.RECORD_OUTCOMES))]
Overrider = Annotated[Caller, Depends(require(Action.OVERRIDE_DECISIONS))]
DecisionReader = Annotated[Caller, Depends(require(Action.READ_DECISIONS))]
SubjectEraser = Annotated[Caller, Depends(require(Action.ERASE_SUBJECTS))]
MonitoringChecker = Annotated[Caller, Depends(require(Action.CHECK_MONITORING))]
Exporter = Annotated[Caller, Depends(require(Action.EXPORT))]
ExportReader = Annotated[Caller, Depends(require(Action.READ_EXPORTS))]
