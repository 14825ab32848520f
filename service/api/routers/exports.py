"""Export bundles for auditors and regulators: build one, list the ones you may see, download one.

Building is for admins and auditors; a regulator sees only the bundles shared
with them. Every download is recorded in the ledger (``Export.Downloaded``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import POSITION_HEADER, Exporter, ExportReader, ServicesDep
from service.api.paging import PageDep
from service.application.auth import Caller
from service.bootstrap import Services
from service.exports import store
from service.exports.bundle import export_bundle
from service.exports.scope import ExportRequest

router = APIRouter(prefix="/v1/exports", tags=["exports"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


class ExportCreate(BaseModel):
    """What to export."""

    model_config = ConfigDict(populate_by_name=True)

    model: str = Field(min_length=1, max_length=200, description="the model name")
    since: str | None = Field(None, alias="from", description="RFC 3339; predictions recorded at or after")
    until: str | None = Field(None, alias="to", description="RFC 3339; predictions recorded at or before")
    predictions: Literal["all", "sample", "none"] = "all"
    sample_size: int = Field(1_000, ge=1, le=1_000_000, description="most predictions a sample holds")
    share_with: list[str] = Field(default_factory=list, max_length=100, description="principal ids (regulators)")


class ExportCreated(BaseModel):
    """The recorded export and its archive."""

    id: str
    digest: str = Field(description="sha256 of the zip archive")
    size: int
    events: int
    position: int


@router.post("", response_model=ExportCreated, status_code=status.HTTP_201_CREATED)
def create_export(body: ExportCreate, caller: Exporter, services: ServicesDep, response: Response) -> ExportCreated:
    """Build a bundle of the model's signed history, record the export and store the archive."""
    request = ExportRequest.of(
        body.model,
        body.since,
        body.until,
        body.predictions,
        body.sample_size,
        body.share_with,
    )
    result = export_bundle(services, request, actor=caller.actor)
    response.headers[POSITION_HEADER] = str(result.position)
    return ExportCreated(
        id=result.export_id,
        digest=result.bundle_digest,
        size=result.size,
        events=result.events,
        position=result.position,
    )


@router.get("", response_model=list[store.ExportPublic])
def list_exports(
    caller: ExportReader, services: ServicesDep, page: PageDep, request: Request, response: Response
) -> list[store.ExportPublic]:
    """The exports you may see (a regulator: those shared with them), oldest first (cursor-paged)."""
    found = sorted(store.visible_exports(services, caller.id, caller.roles), key=lambda e: (e.created_at, e.id))
    after = page.after("exports")
    if after is not None:
        found = [e for e in found if [e.created_at, e.id] > after]
    return page.page(request, response, "exports", found[: page.limit + 1], lambda e: (e.created_at, e.id))


@router.get("/{export_id}/bundle", response_class=StreamingResponse)
def download_bundle(export_id: IdPath, caller: ExportReader, services: ServicesDep) -> StreamingResponse:
    """The bundle (zip); the download is recorded in the ledger first."""
    return bundle_response(services, export_id, caller)


def bundle_response(services: Services, export_id: str, caller: Caller) -> StreamingResponse:
    """The export's archive as a zip attachment: the API's answer, which the console gives too.

    The caller must be allowed to see the export (NotFound / Forbidden otherwise);
    the archive is digest-checked before the first byte, and the download is
    recorded in the ledger before the response starts (its position in
    ``X-Ledger-Position``).
    """
    export = store.visible_export(services, export_id, caller.id, caller.roles)
    assert export.bundle_digest is not None
    chunks = services.blobs.read_verified(export.bundle_digest)
    export.record_download(by=caller.actor, actor=caller.actor)
    recordings = services.ledger.save(export)
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", export.model_name)
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="mlledger-export-{safe_name}-{str(export.id)[:8]}.zip"',
            "X-Bundle-Digest": export.bundle_digest,
            POSITION_HEADER: str(recordings[-1].notification.id),
        },
    )
