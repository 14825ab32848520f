"""Privileged changes: the proposals one admin made and another admin confirms (four-eyes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel

from service.api.deps import AdminCaller, LedgerDep, outcome, written
from service.api.schemas import ChangeResult, Reason, WriteResult
from service.application.auth import new_token

router = APIRouter(prefix="/v1/privileged-changes", tags=["privileged changes"])
ChangePath = Annotated[str, Path(min_length=1, max_length=64)]


class ChangeDetail(BaseModel):
    """A proposed privileged change and where it stands."""

    id: str
    kind: str
    details: dict[str, Any]
    reason: str
    proposer: str
    status: str
    confirmer: str | None


@router.get("/{change_id}", response_model=ChangeDetail)
def get_change(change_id: ChangePath, caller: AdminCaller, ledger: LedgerDep) -> ChangeDetail:
    """A proposal (admin)."""
    change = ledger.privileged_change(change_id)
    return ChangeDetail(
        id=str(change.id),
        kind=change.kind,
        details=change.details,
        reason=change.reason,
        proposer=change.proposer,
        status=change.status,
        confirmer=change.confirmer,
    )


@router.post("/{change_id}/confirm", response_model=ChangeResult)
def confirm_change(change_id: ChangePath, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Confirm another admin's proposal (admin, never its proposer); it takes effect now. For an API key,
    the confirming admin receives the key, once."""
    return outcome(response, ledger.confirm_change(change_id, new_token(), actor=caller.actor))


@router.post("/{change_id}/withdraw", response_model=WriteResult)
def withdraw_change(
    change_id: ChangePath, body: Reason, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Withdraw a pending proposal (admin)."""
    return written(response, ledger.withdraw_change(change_id, body.reason, actor=caller.actor))
