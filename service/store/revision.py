"""Whether a data directory or database holds a ledger, and at which migration revision.

Kept apart from :mod:`service.bootstrap` (which wires every read model and the
migrations) so that a command which only reads the ledger, ``mlledger verify``
above all, does not pay for importing them before it starts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa

from domain.errors import LedgerError
from service.settings import Settings
from service.store.persistence import create_inspecting_engine, sqlite_path

VERSION_TABLE = "alembic_version"
"""Where the migrations keep the revision (Alembic's table, in the ledger's schema on PostgreSQL)."""


class NotMigrated(LedgerError):
    """The database's tables are older than this version of the service."""

    title = "Database not migrated"


class NoLedger(NotMigrated):
    """The data directory or database holds no ledger yet (first run): nothing to open, verify or export."""

    title = "No ledger"


def ledger_location(settings: Settings) -> str:
    """Where the ledger lives, in words for a message (never the database password)."""
    path = sqlite_path(settings)
    if path is not None:
        return str(path)
    parts = urlsplit(settings.resolved_database_url)
    database = parts.path.lstrip("/") or "postgres"
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return f"PostgreSQL {host}/{database} (schema {settings.database_schema})"


def current_revision(settings: Settings) -> str | None:
    """The database's migration revision, or None when it has no ledger; creates nothing.

    Read as Alembic reads it (the one row of its version table, in the schema the
    engine's search path names), without importing Alembic.
    """
    engine = create_inspecting_engine(settings)
    if engine is None:
        return None
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
    finally:
        engine.dispose()
    if len(found) > 1:
        raise NotMigrated(f"the database at {ledger_location(settings)} names {len(found)} migration revisions")
    return str(found[0]) if found else None


def require_ledger(settings: Settings) -> str:
    """The ledger's migration revision; refuse a data directory or database that holds no ledger yet.

    Commands that open an existing ledger call this first; without it, opening
    would create a key, a keyring and an event table beside missing read-model
    tables, and then fail on them. Guarded by tests/service/test_cli_first_run.py.
    """
    current = current_revision(settings)
    if current is None:
        raise NoLedger(f"no ledger at {ledger_location(settings)}; create one with 'mlledger migrate'")
    return current
