"""Database wiring: the eventsourcing recorder's environment and the SQLAlchemy
engine for read models, both pointed at the same database.

SQLite runs in WAL mode with a busy timeout so the API, the projections and the
runner share one file without "database is locked" errors. PostgreSQL uses a
schema (``MLLEDGER_DATABASE_SCHEMA``) for every table, which is also how the tests
isolate themselves.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.settings import Settings
from service.store import connection_pool

connection_pool.install()  # before any pool hands out a connection

SQLITE_EVENTS_TABLE = "stored_events"
POSTGRES_EVENTS_TABLE = "mlledger_events"  # eventsourcing names it after the application


def events_table(engine: Engine) -> str:
    """The event store's table (the library names it differently per database)."""
    return SQLITE_EVENTS_TABLE if engine.dialect.name == "sqlite" else POSTGRES_EVENTS_TABLE


SQLITE_BUSY_TIMEOUT_MS = 30_000


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """Environment for ``eventsourcing`` (persistence module and connection)."""
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        prepare_sqlite_file(url)
        path = url.removeprefix("sqlite:///")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": str(SQLITE_BUSY_TIMEOUT_MS // 1000),
            "APPLICATION_RECORDER_TOPIC": "service.store.sqlite_recorder:LedgerSQLiteRecorder",
            "CREATE_TABLE": "y",
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_SCHEMA": settings.database_schema,
        "POSTGRES_POOL_SIZE": "8",
        "POSTGRES_MAX_OVERFLOW": "8",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "APPLICATION_RECORDER_TOPIC": "service.store.pg_recorder:LedgerPostgresRecorder",
        "CREATE_TABLE": "y",
    }


def prepare_sqlite_file(url: str) -> None:
    """Create the SQLite file (and its directory) readable by its owner only.

    SQLite gives its -wal and -shm files the database file's mode, so they
    inherit 0600 too.
    """
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def sqlalchemy_url(settings: Settings) -> str:
    """The database URL in SQLAlchemy's dialect+driver form."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        return url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError(f"unsupported database URL {url!r}")


def create_engine(settings: Settings, *, immediate: bool = False, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine for read models on the ledger's database.

    With ``immediate`` (for writers such as projection runners), SQLite
    transactions start with ``BEGIN IMMEDIATE`` so two writers queue on the busy
    timeout instead of failing to upgrade a read lock.
    """
    url = sqlalchemy_url(settings)
    if url.startswith("sqlite"):
        prepare_sqlite_file(url)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    schema = settings.database_schema
    return sa.create_engine(
        url,
        connect_args={"options": f"-csearch_path={schema}"},
        pool_pre_ping=True,
        **kwargs,
    )


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database file, or None when the ledger lives in PostgreSQL."""
    url = sqlalchemy_url(settings)
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None


def create_inspecting_engine(settings: Settings) -> Engine | None:
    """An engine that reads the ledger's database and creates nothing, or None when there is no SQLite file.

    :func:`create_engine` creates a missing SQLite file (and its directory) and
    turns on WAL mode; a command that only asks whether a ledger exists must
    leave a fresh data directory as it found it, so SQLite is opened read-only.
    On PostgreSQL, connecting creates nothing (a missing schema reads as empty).
    """
    path = sqlite_path(settings)
    if path is None:
        return create_engine(settings)
    if not path.is_file():
        return None
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))


def events_select(engine: Engine) -> str:
    """SQL selecting (notification_id, originator_id, version, topic, state) in order.

    The caller appends its own WHERE (on the notification id column) and ORDER BY.
    """
    column = notification_id_column(engine)
    columns = f"{column} AS notification_id, originator_id, originator_version, topic, state"
    return f"SELECT {columns} FROM {events_table(engine)}"  # noqa: S608 - constant names


def notification_id_column(engine: Engine) -> str:
    """The column holding the notification id in the events table."""
    return "rowid" if engine.dialect.name == "sqlite" else "notification_id"


@dataclass(frozen=True)
class EventRow:
    """One stored event, read straight from the events table."""

    position: int
    aggregate_id: str
    version: int
    topic: str
    record: bytes


def read_events(engine: Engine, aggregate_ids: Iterable[uuid.UUID | str]) -> list[EventRow]:
    """Every stored event of the given aggregates, in ledger (notification) order.

    Read with the driver's own cursor: on PostgreSQL all ids go as one ``uuid[]``
    parameter (binary rows); on SQLite, which stores ids as hex text, in chunks.
    """
    wanted = [uuid.UUID(str(a)) for a in aggregate_ids]
    rows: list[EventRow] = []
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":
            cursor = raw.cursor()
            try:
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    cursor.execute(f"{events_select(engine)} WHERE originator_id IN ({marks})", [a.hex for a in chunk])
                    rows += [EventRow(int(n), str(uuid.UUID(o)), int(v), t, bytes(s)) for n, o, v, t, s in cursor]
            finally:
                cursor.close()
        else:
            cursor = raw.cursor(binary=True)
            try:
                cursor.execute(f"{events_select(engine)} WHERE originator_id = ANY(%s)", (wanted,))
                rows = [EventRow(int(n), str(o), int(v), t, bytes(s)) for n, o, v, t, s in cursor]
            finally:
                cursor.close()
    rows.sort(key=lambda row: row.position)
    return rows
