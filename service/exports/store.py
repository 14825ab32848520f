"""Saved bundles: the exports recorded in the ledger, who may see them, and their archives.

There is no table of exports: the ``Export`` aggregates are the record. They are
found by the topic of their first event and loaded (signature-checked) from the
ledger; each archive lives in the content-addressed blob store under the digest
its ``Packed`` event names, so every download is digest-checked.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from domain.errors import Forbidden, NotFound
from domain.export import Export
from domain.integrity.sealing import format_timestamp
from service.bootstrap import Services
from service.store.persistence import events_select, notification_id_column


class ExportPublic(BaseModel):
    """An export as the API shows it."""

    id: str
    model_name: str
    scope: dict[str, Any]
    shared_with: list[str]
    events: int
    bundle_digest: str | None
    size: int | None
    created_by: str
    created_at: str
    downloads: int


def export_ids(engine: Engine) -> list[str]:
    """Ids of every export, oldest first."""
    query = sa.text(f"{events_select(engine)} WHERE topic = :topic ORDER BY {notification_id_column(engine)}")
    with engine.connect() as conn:
        return [str(row[1]) for row in conn.execute(query, {"topic": Export.Created.TOPIC})]


def public(export: Export) -> ExportPublic:
    """The API view of an export."""
    return ExportPublic(
        id=str(export.id),
        model_name=export.model_name,
        scope=export.scope,
        shared_with=export.shared_with,
        events=export.event_count,
        bundle_digest=export.bundle_digest,
        size=export.size,
        created_by=export.created_by,
        created_at=format_timestamp(export.created_on),
        downloads=export.downloads,
    )


def visible_exports(services: Services, principal_id: str, roles: list[str]) -> list[ExportPublic]:
    """The exports this principal may see, oldest first."""
    exports = [services.ledger.get(export_id, Export) for export_id in export_ids(services.engine)]
    return [public(e) for e in exports if e.visible_to(principal_id, roles)]


def visible_export(services: Services, export_id: str, principal_id: str, roles: list[str]) -> Export:
    """One export, if this principal may see it (NotFound / Forbidden otherwise)."""
    export: Export = services.ledger.get(export_id, Export)
    if not export.visible_to(principal_id, roles):
        raise Forbidden("this export bundle was not shared with you", field="export_id")
    if export.bundle_digest is None:
        raise NotFound(f"export {export_id} has no archive (it was not finished)", field="export_id")
    return export
