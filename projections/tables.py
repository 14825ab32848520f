"""The one SQLAlchemy ``MetaData`` every projection's tables belong to, and the
table of projection positions. Alembic migrations create these tables."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

projection_positions = sa.Table(
    "projection_positions",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
)
