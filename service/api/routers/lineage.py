"""Code versions, pipelines and runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from domain.code import CodeVersion
from domain.errors import InvalidPayload, NotFound
from domain.run import Run
from projections.usage_queries import CostPublic, run_cost
from service.api.deps import LedgerDep, LineageReader, LineageWriter, ServicesDep, refuse_oversized, written
from service.api.routers.registry import DescriptionBody, TagsBody
from service.api.schemas import WriteResult

router = APIRouter(prefix="/v1", tags=["lineage"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
JSONValue = Any


class CodeVersionCreate(BaseModel):
    """A code version (the archive, if any, is uploaded as an artifact of digest ``archive_digest``)."""

    repository: str = Field(min_length=1, max_length=500)
    commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    archive_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")
    entrypoint: str | None = Field(None, max_length=300)


class CodeVersionDetail(CodeVersionCreate):
    """A recorded code version."""

    id: str


class PipelineSpecCreate(BaseModel):
    """A new spec version of a named pipeline."""

    kind: Literal["sklearn", "torch", "python"]
    spec: dict[str, JSONValue]


class PipelineSpecResult(WriteResult):
    """The recorded spec version number."""

    version: int


class RunCreate(BaseModel):
    """A run: requested for a runner, or started by a client that trains elsewhere."""

    name: str = Field("", max_length=200)
    mode: Literal["runner", "client"] = "client"
    pipeline: str | None = Field(None, max_length=200)
    pipeline_version: int | None = Field(None, ge=1)
    dataset_version_ids: list[str] = Field(default_factory=list, max_length=100)
    code_version_id: str | None = None
    params: dict[str, JSONValue] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, lt=2**32)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ParamsLog(BaseModel):
    """Parameters (each key keeps its first value)."""

    params: dict[str, JSONValue] = Field(min_length=1, max_length=1000)


class MetricPoint(BaseModel):
    """One metric value at a step."""

    key: str = Field(min_length=1, max_length=250)
    value: float = Field(allow_inf_nan=False)
    step: int = Field(0, ge=0)
    timestamp: str | None = Field(None, max_length=40)


class MetricsLog(BaseModel):
    """A batch of metric points."""

    metrics: list[MetricPoint] = Field(min_length=1, max_length=10_000)


class RunFinish(BaseModel):
    """How the run ended."""

    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = Field(None, max_length=20_000)


class ArtifactResult(WriteResult):
    """The stored artifact."""

    digest: str
    size: int


class RunDetail(BaseModel):
    """A run as recorded."""

    id: str
    name: str
    mode: str
    status: str
    pipeline_id: str | None
    pipeline_version: int | None
    dataset_version_ids: list[str]
    code_version_id: str | None
    params: dict[str, JSONValue]
    seed: int
    device: str
    submitted_by: str
    artifacts: dict[str, str]
    metric_points: int
    reproduces: str | None = None
    environment_digest: str | None = None
    device_used: str | None = Field(None, description="the device the runner executed on")
    reproductions: dict[str, str] = Field(default_factory=dict, description="reproduction run id -> verdict")
    resources: dict[str, JSONValue] | None = Field(None, description="what the execution used, once recorded")
    cost: CostPublic | None = Field(None, description="what the resources cost at the configured rates")
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class StoredFile(BaseModel):
    """A file in the content-addressed store."""

    digest: str
    size: int


@router.put(
    "/code-archives",
    response_model=StoredFile,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def upload_code_archive(request: Request, caller: LineageWriter, services: ServicesDep) -> object:
    """Upload a code archive (raw body, streamed); register a code version with its digest next."""
    limit = services.settings.max_upload_bytes
    refuse_oversized(request, limit, "body")
    blob = await services.blobs.put_async_chunks(request.stream(), max_bytes=limit)
    return {"digest": blob.digest, "size": blob.size}


@router.post("/code-versions", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def create_code_version(
    body: CodeVersionCreate, caller: LineageWriter, services: ServicesDep, response: Response
) -> object:
    """Register a code version (its archive, if named, must have been uploaded)."""
    if body.archive_digest is not None and not services.blobs.exists(body.archive_digest):
        raise InvalidPayload(
            f"no uploaded archive with digest {body.archive_digest}; PUT it to /v1/code-archives first",
            field="archive_digest",
        )
    return written(response, services.ledger.register_code_version(**body.model_dump(), actor=caller.actor))


@router.get("/code-versions/{code_id}", response_model=CodeVersionDetail)
def get_code_version(code_id: IdPath, caller: LineageReader, ledger: LedgerDep) -> object:
    """A code version."""
    code: CodeVersion = ledger.get(code_id, CodeVersion)
    return {
        "id": str(code.id),
        "repository": code.repository,
        "commit": code.commit,
        "archive_digest": code.archive_digest,
        "entrypoint": code.entrypoint,
    }


@router.post("/pipelines/{name}/specs", response_model=PipelineSpecResult, status_code=status.HTTP_201_CREATED)
def add_pipeline_spec(
    name: NamePath, body: PipelineSpecCreate, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Record a new spec version of a pipeline (created on first use); the spec is validated."""
    number, result = ledger.add_pipeline_spec(name=name, kind=body.kind, spec=body.spec, actor=caller.actor)
    return {**written(response, result), "version": number}


@router.post("/runs", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """Request a run for a runner, or start a client-reported run."""
    return written(response, ledger.start_run(**body.model_dump(), actor=caller.actor))


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: IdPath, caller: LineageReader, ledger: LedgerDep) -> object:
    """A run's current state."""
    run: Run = ledger.get(run_id, Run)
    return {
        "id": str(run.id),
        "name": run.name,
        "mode": run.mode,
        "status": run.status,
        "pipeline_id": run.pipeline_id,
        "pipeline_version": run.pipeline_version,
        "dataset_version_ids": run.dataset_version_ids,
        "code_version_id": run.code_version_id,
        "params": run.params,
        "seed": run.seed,
        "device": run.device,
        "submitted_by": run.submitted_by,
        "artifacts": run.artifacts,
        "metric_points": run.metric_points,
        "reproduces": run.reproduces,
        "environment_digest": run.environment_digest,
        "device_used": run.environment.get("device"),
        "reproductions": run.verdicts,
        "resources": run.resources,
        "cost": run_cost(run.resources, ledger.settings.rates),
        "tags": run.tags,
        "description": run.description,
    }


@router.post("/runs/{run_id}/tags", response_model=WriteResult)
def tag_run(run_id: IdPath, body: TagsBody, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """Set tags of a run (also after it ended: tags annotate, they are not results)."""
    return written(response, ledger.tag_run(run_id, body.tags, actor=caller.actor))


@router.put("/runs/{run_id}/description", response_model=WriteResult)
def describe_run(
    run_id: IdPath, body: DescriptionBody, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Set the description of a run."""
    return written(response, ledger.describe_run(run_id, body.description, actor=caller.actor))


@router.get("/runs/{run_id}/artifacts/{name}")
def download_artifact(
    run_id: IdPath, name: NamePath, caller: LineageReader, services: ServicesDep
) -> StreamingResponse:
    """An artifact's bytes, after checking they still have the recorded digest (``X-Content-Digest``)."""
    run: Run = services.ledger.get(run_id, Run)
    digest = run.artifacts.get(name)
    if digest is None:
        raise NotFound(f"run {run_id} has no artifact {name!r}", field="name")
    chunks = services.blobs.read_verified(digest)  # checked before the response starts
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"X-Content-Digest": digest})


@router.post("/runs/{run_id}/params", response_model=WriteResult)
def log_params(run_id: IdPath, body: ParamsLog, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """Record parameters."""
    return written(response, ledger.log_params(run_id, body.params, actor=caller.actor))


@router.post("/runs/{run_id}/metrics", response_model=WriteResult)
def log_metric(
    run_id: IdPath, body: MetricPoint, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Record one metric point."""
    return written(response, ledger.log_metrics(run_id, [body.model_dump(exclude_none=True)], actor=caller.actor))


@router.post("/runs/{run_id}/metrics:batch", response_model=WriteResult)
def log_metrics(
    run_id: IdPath, body: MetricsLog, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Record many metric points in one event."""
    points = [m.model_dump(exclude_none=True) for m in body.metrics]
    return written(response, ledger.log_metrics(run_id, points, actor=caller.actor))


@router.put(
    "/runs/{run_id}/artifacts/{name}",
    response_model=ArtifactResult,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def upload_artifact(
    run_id: IdPath, name: NamePath, request: Request, caller: LineageWriter, services: ServicesDep, response: Response
) -> object:
    """Upload an artifact (raw body, streamed to the content-addressed store) and record it."""
    limit = services.settings.max_upload_bytes
    refuse_oversized(request, limit, "body")
    services.ledger.get(run_id, Run)  # 404 before reading the body
    blob = await services.blobs.put_async_chunks(request.stream(), max_bytes=limit)
    media_type = request.headers.get("content-type", "application/octet-stream")[:200]
    result = services.ledger.record_artifact(run_id, name, blob.digest, blob.size, media_type, actor=caller.actor)
    return {**written(response, result), "digest": blob.digest, "size": blob.size}


class ReproduceRequest(BaseModel):
    """Optional parameter overrides (a reproduction normally uses none)."""

    params: dict[str, JSONValue] = Field(default_factory=dict, max_length=1000)


@router.post("/runs/{run_id}/cancel", response_model=WriteResult)
def cancel_run(run_id: IdPath, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """Cancel a requested or executing run (its runner stops the execution)."""
    return written(response, ledger.finish_run(run_id, "cancelled", f"cancelled by {caller.name}", actor=caller.actor))


@router.post("/runs/{run_id}/reproduce", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def reproduce_run(
    run_id: IdPath, caller: LineageWriter, ledger: LedgerDep, response: Response, body: ReproduceRequest | None = None
) -> object:
    """Request a re-execution from the run's manifest; the verdict is recorded on this run when it finishes."""
    overrides = body.params if body is not None else {}
    return written(response, ledger.request_again(run_id, caller.actor, reproduce=True, params=overrides))


@router.post("/runs/{run_id}/retry", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def retry_run(run_id: IdPath, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """Request the same run again (for example after it was abandoned)."""
    return written(response, ledger.request_again(run_id, caller.actor, reproduce=False))


@router.post("/runs/{run_id}/finish", response_model=WriteResult)
def finish_run(run_id: IdPath, body: RunFinish, caller: LineageWriter, ledger: LedgerDep, response: Response) -> object:
    """End a run."""
    return written(response, ledger.finish_run(run_id, body.status, body.error, actor=caller.actor))
