"""Operational tables: state the service keeps beside the ledger, never read models.

They share the projections' ``MetaData`` so one set of Alembic migrations creates
every table, but no projection writes them and no rebuild touches them: runner
heartbeats, data subjects' wrapped keys, console sessions and verifications.
"""

from __future__ import annotations

import sqlalchemy as sa

from projections.tables import metadata

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

__all__ = ["console_sessions", "console_verifications", "metadata", "runner_heartbeats", "subject_keys"]
