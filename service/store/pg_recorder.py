"""The event store's PostgreSQL recorder, tuned for a signed ledger.

It is the library's recorder with three changes to the insert: no NOTIFY (the
projectors poll; nobody listens), no pipeline mode (see :meth:`insert_events`),
and rows sent as four binary arrays through ``unnest`` instead of a
text-encoded composite array (psycopg otherwise escapes every row with regular
expressions). The arrays are written here in PostgreSQL's binary array format:
psycopg's generic list dumper costs tens of microseconds per row in Python,
which dominated the insert of a large batch.

Creating the tables and the insert function is serialised with an advisory
lock: PostgreSQL answers two processes that run ``CREATE OR REPLACE FUNCTION``
at once with "tuple concurrently updated", which stopped runners started
together. The table lock that keeps notification ids in commit order is kept
as it is. Under that lock the insert checks that the batch was signed with
the current ledger key (:mod:`service.store.keyring_guard`).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from domain.integrity.ledger_key import KEYRING_ID
from service.store.keyring_guard import KEYRING_VERSION, check_keyring

CREATE_TABLE_LOCK = 0x6D6C6C6564676572  # "mlledger": one key for every process that opens the event store

_HEADER = struct.Struct("!iiiii")  # dimensions, has-nulls flag, element type, length, lower bound
_EMPTY = struct.Struct("!iii")  # no dimensions, no nulls, element type
_LENGTH = struct.Struct("!i")
_BIGINT = struct.Struct("!q")


class BinaryArray(bytes):
    """A one-dimensional array already in PostgreSQL's binary format; subclasses name its type."""

    element_oid = 0
    array_oid = 0

    @classmethod
    def of(cls, elements: Sequence[bytes]) -> BinaryArray:
        """The array of ``elements``, each already in the element type's binary format."""
        if not elements:
            return cls(_EMPTY.pack(0, 0, cls.element_oid))
        return cls(
            _HEADER.pack(1, 0, cls.element_oid, len(elements), 1)
            + b"".join([_LENGTH.pack(len(e)) + e for e in elements])
        )


class UuidArray(BinaryArray):
    element_oid, array_oid = 2950, 2951


class BigintArray(BinaryArray):
    element_oid, array_oid = 20, 1016


class TextArray(BinaryArray):
    element_oid, array_oid = 25, 1009


class ByteaArray(BinaryArray):
    element_oid, array_oid = 17, 1001


def _dumper(array: type[BinaryArray]) -> type[Dumper]:
    def dump(self: Dumper, obj: Any) -> bytes:
        return bytes(obj)

    return type(f"{array.__name__}Dumper", (Dumper,), {"oid": array.array_oid, "format": Format.BINARY, "dump": dump})


for _array in (UuidArray, BigintArray, TextArray, ByteaArray):
    psycopg.adapters.register_dumper(_array, _dumper(_array))


def binary_columns(stored_events: Sequence[StoredEvent], id_type: str) -> tuple[BinaryArray, ...]:
    """The four columns of ``stored_events`` as binary arrays (ids as ``uuid`` or ``text``)."""
    if id_type == "uuid":
        ids: BinaryArray = UuidArray.of([_uuid(e.originator_id).bytes for e in stored_events])
    else:
        ids = TextArray.of([str(e.originator_id).encode() for e in stored_events])
    versions = BigintArray.of([_BIGINT.pack(e.originator_version) for e in stored_events])
    topics = TextArray.of([e.topic.encode() for e in stored_events])
    states = ByteaArray.of([bytes(e.state) for e in stored_events])
    return ids, versions, topics, states


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


class Notified(NamedTuple):
    """A notification as the projector reads it: the originator id as text, the record as bytes."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """Inserts a batch of sealed events in one binary statement."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._newer_select = self._statement(
            "SELECT 1 FROM unnest(%s::{id_type}[], %s::bigint[]) AS known(id, version) "
            "WHERE EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = known.id "
            "AND originator_version > known.version) LIMIT 1"
        )
        self._newer_ids = self._statement(
            "SELECT known.id FROM unnest(%s::{id_type}[], %s::bigint[]) AS known(id, version) "
            "WHERE EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = known.id "
            "AND originator_version > known.version)"
        )
        self._keyring_version = self._statement(
            "SELECT max(originator_version) AS version FROM {schema}.{table} WHERE originator_id = %s"
        )
        # The new notification ids come back as one array: a row (and a dict) per event cost more than the insert.
        self._unnest_insert = self._statement(
            "WITH inserted AS (INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING notification_id) "
            "SELECT array_agg(notification_id ORDER BY notification_id) AS ids FROM inserted"
        )

        self._projected = self._statement(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {schema}.{table} WHERE notification_id >= %s ORDER BY notification_id LIMIT %s"
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_projected(self, start: int, limit: int) -> list[Notified]:
        """The notifications from ``start`` on (at most ``limit``), as the projector reads them: plain tuples
        instead of eventsourcing's ``Notification`` built from a dict and a UUID per row."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._projected, (start, limit), prepare=True)
            return [Notified(int(i), o, int(v), t, bytes(b)) for i, o, v, t, b in curs.fetchall()]

    def _statement(self, text: str) -> Composed:
        """``text`` with this ledger's ``{schema}``, events ``{table}`` and originator ``{id_type}`` filled in."""
        return SQL(text).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )

    def has_newer(self, known: Mapping[uuid.UUID, int]) -> bool:
        """Whether any aggregate in ``known`` has an event after the version given for it: one query."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._newer_select, (list(known), list(known.values())), prepare=True)
            return curs.fetchone() is not None

    def newer(self, known: Mapping[uuid.UUID, int]) -> set[uuid.UUID]:
        """Which aggregates in ``known`` have an event after the version given for each: one query."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._newer_ids, (list(known), list(known.values())), prepare=True)
            return {_uuid(row["id"]) for row in curs.fetchall()}

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        curs.execute(SQL("SELECT pg_advisory_xact_lock(%s)"), (CREATE_TABLE_LOCK,), prepare=False)
        super()._create_table(curs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Insert in one transaction: lock the table, one ``INSERT ... RETURNING``, commit.

        The library sends these in pipeline mode. A group commit of thousands
        of events is one statement of many megabytes, and psycopg can stall
        sending such a statement in a pipeline: the server waits for the rest
        of it while the client waits for results, holding the table lock that
        every other writer needs. Three round trips on a local connection cost
        far less than that risk.
        """
        if self.datastore.enable_db_functions or not stored_events:
            ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return ids
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        row = curs.fetchone()
        found: list[int] = [] if row is None or row["ids"] is None else row["ids"]
        if len(found) != len(stored_events):
            raise ProgrammingError(f"inserted {len(stored_events)} events but got {len(found)} notification ids")
        return found

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        self._lock_table(curs)
        expected = kwargs.get(KEYRING_VERSION)
        if expected is not None:  # under the table lock: no rotation can land until this commits
            curs.execute(self._keyring_version, (KEYRING_ID,), prepare=True)
            row = curs.fetchone()
            check_keyring(None if row is None else row["version"], expected)
        curs.execute(self._unnest_insert, binary_columns(stored_events, self.datastore.originator_id_type), binary=True)
