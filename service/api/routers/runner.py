"""The runner protocol over HTTP: runners are principals with the ``runner`` role, never key holders.

A runner lists requested runs, claims one (receiving its work order and run
token), fetches the run's inputs by digest, uploads its outputs
content-addressed, heartbeats, and hands in an execution statement signed with
its own registered key. Inputs, outputs and progress also accept the run token
(``X-Run-Token``) instead of an API key: that is how a Ray job on another node
works for exactly one run and nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from domain.errors import InvalidPayload, PayloadTooLarge
from domain.permissions import Action
from domain.run import Run
from service.api.deps import (
    LedgerDep,
    ServicesDep,
    bearer_token,
    refuse_oversized,
    require,
    written,
)
from service.api.schemas import WriteResult
from service.application.auth import Caller, authenticate
from service.application.runner_desk import Claimant

router = APIRouter(prefix="/v1/runner", tags=["runner"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
DigestPath = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$")]
RunnerId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")]
RunnerCaller = Annotated[Caller, Depends(require(Action.EXECUTE_RUNS))]
RUN_TOKEN_HEADER = "X-Run-Token"  # noqa: S105 - a header name, not a secret


def _claimant(caller: Caller) -> Claimant:
    return Claimant(caller.id, caller.actor)


def run_access(run_id: IdPath, request: Request, services: ServicesDep, ledger: LedgerDep) -> tuple[Run, str]:
    """The run and the actor that may work on it: a run token for this very run, or the API key of the
    runner principal that claimed it."""
    token = request.headers.get(RUN_TOKEN_HEADER)
    if token is not None:
        run = services.desk.check_token(run_id, token)
        return run, f"run-token:{run.claimed_by}"
    caller = authenticate(ledger, bearer_token(request))
    caller.require(Action.EXECUTE_RUNS)
    return services.desk.held_by_principal(run_id, caller.id), caller.actor


RunAccess = Annotated[tuple[Run, str], Depends(run_access)]


class RequestedRuns(BaseModel):
    """Runs awaiting a runner, and where to continue listing."""

    runs: list[dict[str, Any]]
    cursor: int


@router.get("/requested", response_model=RequestedRuns)
def requested(
    caller: RunnerCaller,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> object:
    """Runs requested after ``after`` (a ledger position) that still await a runner."""
    runs, cursor = services.desk.requested(after, limit)
    return {"runs": runs, "cursor": cursor}


class ClaimRequest(BaseModel):
    """What a runner says about itself when it claims a run."""

    run_id: str = Field(min_length=1, max_length=64)
    runner_id: RunnerId
    host: str = Field(min_length=1, max_length=255)
    device: str = Field(pattern="^(cpu|cuda)$")
    device_note: str | None = Field(None, max_length=1000)
    backend: str = Field(pattern="^(local|ray)$")
    environment: dict[str, Any]


@router.post("/claims")
def claim(body: ClaimRequest, caller: RunnerCaller, services: ServicesDep) -> object:
    """Claim a requested run; 409 when another runner holds it. Answers the run's work order."""
    environment = {**body.environment, "backend": body.backend, "runner_principal": caller.id}
    return services.desk.claim(
        _claimant(caller), body.run_id, body.runner_id, body.host, environment, body.device, body.device_note
    )


class ClaimFirstRequest(BaseModel):
    """A runner claiming the first of several requested runs that still awaits a runner; what it says
    about itself is what a single claim says (the environment's ``seed`` is set to the claimed run's)."""

    run_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=100)
    runner_id: RunnerId
    host: str = Field(min_length=1, max_length=255)
    device: str = Field(pattern="^(cpu|cuda)$")
    device_note: str | None = Field(None, max_length=1000)
    backend: str = Field(pattern="^(local|ray)$")
    environment: dict[str, Any]


class ClaimedFirst(BaseModel):
    """The work order of the run claimed (None when every candidate was taken) and the candidates
    passed over (claimed or ended already): a runner drops those from its list."""

    order: dict[str, Any] | None
    passed_over: list[str]


@router.post("/claims:first", response_model=ClaimedFirst)
def claim_first(body: ClaimFirstRequest, caller: RunnerCaller, services: ServicesDep) -> object:
    """Claim the first of ``run_ids`` that still awaits a runner, trying them in the order given."""
    environment = {**body.environment, "backend": body.backend, "runner_principal": caller.id}
    order, passed = services.desk.claim_first(
        _claimant(caller), body.run_ids, body.runner_id, body.host, environment, body.device, body.device_note
    )
    return {"order": order, "passed_over": passed}


class AttachRequest(BaseModel):
    """A runner offering to take over runs whose runner went silent."""

    runner_id: RunnerId
    backend: str = Field(pattern="^(ray)$")


@router.post("/attachments")
def attach(body: AttachRequest, caller: RunnerCaller, services: ServicesDep) -> object:
    """Take over active runs of ``backend`` whose runner went silent; answers their work orders."""
    return {"orders": services.desk.attach(_claimant(caller), body.runner_id, body.backend)}


class Heartbeat(BaseModel):
    """The runs a runner is executing."""

    runner_id: RunnerId
    run_ids: list[str] = Field(max_length=1000)


@router.post("/heartbeats")
def heartbeat(body: Heartbeat, caller: RunnerCaller, services: ServicesDep) -> object:
    """Record a sign of life; answers the runs that ended elsewhere (cancelled), which the runner stops."""
    return {"ended": services.desk.heartbeat(body.runner_id, body.run_ids)}


@router.post("/sweeps")
def sweep(caller: RunnerCaller, services: ServicesDep) -> object:
    """Mark runs whose runner went silent abandoned (Ray runs get time for another runner to re-attach)."""
    return {"abandoned": services.desk.sweep(caller.actor)}


@router.get("/runs/{run_id}/inputs/{digest}", response_class=FileResponse)
def download_input(digest: DigestPath, access: RunAccess, services: ServicesDep) -> FileResponse:
    """One of the run's inputs (a dataset file or the code archive), checked against its digest first."""
    run, _actor = access
    path = services.desk.input_path(run, digest)
    return FileResponse(path, media_type="application/octet-stream", headers={"X-Content-Digest": digest})


class UploadResult(BaseModel):
    """Where an uploaded output lies in the content-addressed store."""

    digest: str
    size: int


@router.put(
    "/runs/{run_id}/outputs",
    response_model=UploadResult,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def upload_output(request: Request, access: RunAccess, services: ServicesDep) -> object:
    """Store one output file of an active run (streamed, bounded); recorded only with the run's statement."""
    limit = services.settings.max_upload_bytes
    refuse_oversized(request, limit, "body")
    blob = await services.blobs.put_async_chunks(request.stream(), max_bytes=limit)
    return {"digest": blob.digest, "size": blob.size}


class UploadedOutputs(BaseModel):
    """Where each uploaded output lies in the content-addressed store, in the order sent."""

    outputs: list[UploadResult]


MAX_OUTPUTS_PER_REQUEST = 16


@router.put(
    "/runs/{run_id}/outputs:batch",
    response_model=UploadedOutputs,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def upload_outputs(
    request: Request,
    access: RunAccess,
    services: ServicesDep,
    size: Annotated[list[int], Query(min_length=1, max_length=MAX_OUTPUTS_PER_REQUEST)],
) -> object:
    """Store several output files of an active run sent one after another in one body, the i-th
    ``size[i]`` bytes long (each bounded as a single upload is); none is stored unless the body holds
    exactly those bytes."""
    limit = services.settings.max_upload_bytes
    if any(part < 0 for part in size):
        raise InvalidPayload("a size cannot be negative", field="size")
    if any(part > limit for part in size):
        raise PayloadTooLarge(f"the upload exceeds the limit of {limit} bytes", field="body")
    stored = await services.blobs.put_async_parts(request.stream(), size)
    return {"outputs": [{"digest": blob.digest, "size": blob.size} for blob in stored]}


class Progress(BaseModel):
    """Metric points a run reported while executing."""

    points: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


@router.post("/runs/{run_id}/metrics", response_model=WriteResult)
def progress(body: Progress, access: RunAccess, services: ServicesDep, response: Response) -> object:
    """Record progress metrics of an active run."""
    run, actor = access
    return written(response, services.desk.log_progress(run, body.points, actor))


class ResultRequest(BaseModel):
    """A runner's signed execution statement, the final metric points and, when the run executed
    on another node (Ray), that node's environment."""

    statement: dict[str, Any]
    signature: str = Field(min_length=1, max_length=200)
    metrics: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)
    node_environment: dict[str, Any] | None = None


@router.post("/runs/{run_id}/result", response_model=WriteResult)
def result(
    run_id: IdPath, body: ResultRequest, caller: RunnerCaller, services: ServicesDep, response: Response
) -> object:
    """Record how a run ended; 422 when the statement does not verify with the runner's registered key
    or does not name the run's inputs (then nothing is recorded)."""
    recorded = services.desk.record(
        _claimant(caller), run_id, body.statement, body.signature, body.metrics, body.node_environment
    )
    return written(response, recorded)


__all__ = ["RUN_TOKEN_HEADER", "router"]
