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

runner_heartbeats = sa.Table(
    "runner_heartbeats",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("runner_id", sa.String(200), primary_key=True),
    sa.Column("beat_at", sa.Float, nullable=False),
)
"""Operational state, not a read model: the last sign of life of each executing
run's runner (epoch seconds). Heartbeats are not ledger events; only the
verdict they lead to (``Run.Abandoned``) is."""

subject_keys = sa.Table(
    "subject_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("subject_id", sa.String(200), nullable=False, unique=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
)
"""Operational state, not a read model: each data subject's input key, wrapped
by the service's key-encryption key. Erasure deletes the row (crypto-shredding);
the ledger keeps only the key's id and the tombstone."""


console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("slot", sa.String(64), primary_key=True),
    sa.Column("principal_id", sa.String(200), nullable=False),
    sa.Column("key_digest", sa.String(100), nullable=False),
    sa.Column("csrf_token", sa.String(100), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Index("ix_console_sessions_last_seen", "last_seen"),
)
"""Operational state, not a read model: the web console's open sessions, shared
by every API process. A session is filed under the SHA-256 of its token (the
table holds no usable token) with the digest of the API key it was opened with
(never the key); times are wall-clock epoch seconds."""


console_verifications = sa.Table(
    "console_verifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("started_by", sa.String(200), nullable=False),
    sa.Column("owner", sa.String(300), nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("report", sa.Text, nullable=True),
)
"""Operational state, not a read model: the web console's ledger verifications,
shared by every API process. A row without ``finished_at`` is under way in the
process ``owner`` (``host-pid``), which refreshes ``heartbeat_at`` while it
waits, or abandoned once that heartbeat is too old; a finished row holds ``ok``
and the report (counts and findings) as JSON text. Times are wall-clock epoch
seconds."""


def json_text(value: Any) -> str:
    """Deterministic JSON text for read-model columns (sorted keys, compact).

    Not RFC 8785: values read back from canonical envelopes may hold integers
    beyond 2**53 (canonical JSON writes a float such as 1e16 as digits), which
    the canonical encoder refuses; a read model only needs a stable form.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
