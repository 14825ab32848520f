"""The one SQLAlchemy ``MetaData`` every projection's tables belong to, and the
table of projection positions. Alembic migrations create these tables."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

projection_positions = sa.Table(
    "projection_positions",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
)


def json_text(value: Any) -> str:
    """Deterministic JSON text for read-model columns (sorted keys, compact).

    Not RFC 8785: values read back from canonical envelopes may hold integers
    beyond 2**53 (canonical JSON writes a float such as 1e16 as digits), which
    the canonical encoder refuses; a read model only needs a stable form.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
