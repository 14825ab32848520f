"""Schemas shared by several routers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WriteResult(BaseModel):
    """What a write recorded: the record's id and the ledger position."""

    id: str
    position: int


class ChangeResult(WriteResult):
    """A privileged request: applied (``pending`` false; ``id`` is the changed record), or proposed
    (``pending`` true, status 202; ``id`` is the proposal another admin confirms). ``api_key`` is a key
    issued by this call: shown once, stored only as a digest."""

    pending: bool = False
    api_key: str | None = None


class Reason(BaseModel):
    """Why (recorded in the event)."""

    reason: str = Field(min_length=1, max_length=2000)
