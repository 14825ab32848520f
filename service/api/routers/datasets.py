"""Datasets: upload (multipart, streamed) or register by URI and digest."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from domain.dataset import DatasetVersion
from domain.errors import InvalidPayload
from service.api.deps import LedgerDep, LineageReader, LineageWriter, ServicesDep, refuse_oversized, written
from service.api.routers.registry import DescriptionBody, TagsBody
from service.api.schemas import WriteResult
from service.application import datasets

router = APIRouter(prefix="/v1", tags=["datasets"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]


class DatasetMetadata(BaseModel):
    """What the uploader declares about the data."""

    format: str = Field("csv", pattern="^(csv|parquet|json|jsonl|npz|other)$")
    source: str = Field("upload", max_length=2000)
    datasheet: dict[str, Any] = Field(default_factory=dict)


class DatasetRegister(DatasetMetadata):
    """A file the server can read (file:// inside the import directory) and its digest."""

    uri: str = Field(min_length=1, max_length=4000)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    schema_: list[dict[str, Any]] | None = Field(None, alias="schema")


class DatasetVersionDetail(BaseModel):
    """A dataset version."""

    id: str
    name: str
    number: int
    digest: str
    size: int
    format: str
    schema_: list[dict[str, Any]] = Field(alias="schema")
    row_count: int
    profile: list[dict[str, Any]]
    datasheet: dict[str, Any]
    source: str
    deprecated: bool
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""


@router.post(
    "/datasets/{name}/versions",
    response_model=WriteResult,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "JSON: format, source, datasheet"},
                        },
                    }
                }
            },
            "required": True,
        }
    },
)
async def upload_dataset(
    name: NamePath, request: Request, caller: LineageWriter, services: ServicesDep, response: Response
) -> object:
    """Upload a new version of a dataset; digest, schema, row count and profile are computed here."""
    limit = services.settings.max_upload_bytes
    refuse_oversized(request, limit + 64 * 1024, "file")  # multipart framing is not data
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidPayload("send the file as multipart/form-data with a 'file' part", field="file")
    form = await request.form(max_files=1, max_fields=5, max_part_size=256 * 1024)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidPayload("the form needs a 'file' part", field="file")
        raw = form.get("metadata") or "{}"
        try:
            meta = DatasetMetadata.model_validate(json.loads(str(raw)))
        except (ValueError, ValidationError) as exc:
            raise InvalidPayload(f"metadata is not valid: {str(exc).splitlines()[0]}", field="metadata") from None

        def chunks() -> Any:
            while chunk := upload.file.read(1024 * 1024):
                yield chunk

        blob = services.blobs.put_chunks(chunks(), max_bytes=limit)
    finally:
        await form.close()
    result = datasets.register(
        services.ledger,
        name,
        blob,
        format=meta.format,
        datasheet=meta.datasheet,
        source=meta.source,
        actor=caller.actor,
    )
    return written(response, result)


@router.post("/datasets/{name}/versions:register", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def register_dataset(
    name: NamePath, body: DatasetRegister, caller: LineageWriter, services: ServicesDep, response: Response
) -> object:
    """Register a file by URI; its digest is checked and a mismatch records nothing."""
    path = datasets.resolve_uri(body.uri, services.settings.resolved_import_dir)
    blob = datasets.import_file(services.blobs, path, body.digest)
    result = datasets.register(
        services.ledger,
        name,
        blob,
        format=body.format,
        datasheet=body.datasheet,
        source=body.uri,
        actor=caller.actor,
        schema=body.schema_,
    )
    return written(response, result)


@router.get("/dataset-versions/{dataset_id}", response_model=DatasetVersionDetail, response_model_by_alias=True)
def get_dataset_version(dataset_id: NamePath, caller: LineageReader, ledger: LedgerDep) -> object:
    """A dataset version."""
    found: DatasetVersion = ledger.get(dataset_id, DatasetVersion)
    return {
        "id": str(found.id),
        "name": found.name,
        "number": found.number,
        "digest": found.digest,
        "size": found.size,
        "format": found.format,
        "schema": found.schema,
        "row_count": found.row_count,
        "profile": found.profile,
        "datasheet": found.datasheet,
        "source": found.source,
        "deprecated": found.deprecated,
        "tags": found.tags,
        "description": found.description,
    }


@router.post("/dataset-versions/{dataset_id}/tags", response_model=WriteResult)
def tag_dataset_version(
    dataset_id: NamePath, body: TagsBody, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Set tags of a dataset version."""
    return written(response, ledger.tag_dataset_version(dataset_id, body.tags, actor=caller.actor))


@router.put("/dataset-versions/{dataset_id}/description", response_model=WriteResult)
def describe_dataset_version(
    dataset_id: NamePath, body: DescriptionBody, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Set the description of a dataset version."""
    return written(response, ledger.describe_dataset_version(dataset_id, body.description, actor=caller.actor))


@router.get("/dataset-versions/{dataset_id}/content")
def download_dataset(dataset_id: NamePath, caller: LineageReader, services: ServicesDep) -> StreamingResponse:
    """The dataset's bytes, after checking they still have the recorded digest."""
    found: DatasetVersion = services.ledger.get(dataset_id, DatasetVersion)
    chunks = services.blobs.read_verified(found.digest)  # checked before the response starts
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"X-Content-Digest": found.digest})
