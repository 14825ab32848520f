"""Receipts: the sealed event a caller wrote, so that a client can check for itself that its
write is in the transparency log (the inclusion proof is public, ``/v1/ledger/proofs/inclusion``).

A caller gets the receipt of its own events; roles that may read any ledger event
get any. Someone else's event answers 404, as a missing one does, so a receipt
never tells who else wrote what.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from domain.errors import NotFound
from domain.permissions import Action, allowed
from service.api.deps import CurrentCaller, ServicesDep
from service.store.event_store import open_record

router = APIRouter(prefix="/v1", tags=["ledger"])


class ReceiptPublic(BaseModel):
    """A sealed event: its envelope, hash (sha256 of the envelope's RFC 8785 form) and the ledger's signature."""

    notification_id: int
    envelope: dict[str, Any]
    hash: str
    signature: str
    key_id: str


@router.get("/receipts/{notification_id}", response_model=ReceiptPublic)
def receipt(
    notification_id: Annotated[int, Path(ge=1, le=2**62)], caller: CurrentCaller, services: ServicesDep
) -> ReceiptPublic:
    """The sealed event at a ledger position, if the caller wrote it (or may read every event)."""
    missing = NotFound(f"you wrote no event at position {notification_id}", field="notification_id")
    found = services.ledger.recorder.select_notifications(notification_id, 1)
    if not found or found[0].id != notification_id:
        raise missing
    sealed, envelope = open_record(found[0])
    if envelope.get("actor") != caller.actor and not allowed(Action.READ_LEDGER_EVENTS, caller.roles):
        raise missing
    return ReceiptPublic(
        notification_id=notification_id,
        envelope=envelope,
        hash=sealed.hash,
        signature=sealed.signature,
        key_id=sealed.key_id,
    )
