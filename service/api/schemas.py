"""Schemas shared by several routers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WriteResult(BaseModel):
    """What a write recorded: the record's id and the ledger position."""

    id: str
    position: int


class Reason(BaseModel):
    """Why (recorded in the event)."""

    reason: str = Field(min_length=1, max_length=2000)
