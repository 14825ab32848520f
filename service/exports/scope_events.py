"""An export's events read from the database as streams, in ledger order.

A bundle of a busy model holds hundreds of thousands of prediction events, so
none of its passes holds them all: the aggregate ids go to the database once
(one ``uuid[]`` parameter on PostgreSQL, a temporary table on SQLite) and the
rows come back through a server-side cursor, a page at a time.

Every pass is bounded by the last position the first pass saw (an event
appended to a record in scope while the export runs stays out of it, as it
stays out of the export record's commitment); the export's own events are
read with them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from domain.integrity.sealing import SealedEvent
from service.store.persistence import events_table, notification_id_column

_HEADER = re.compile(rb'\{"hash":"([0-9a-f]{64})","key_id":"([0-9a-f]{16})","signature":"([A-Za-z0-9+/=]+)"\}\n')
PAGE = 2_000
HEAD_BYTES = 512
"""The first bytes of a record, enough for its header (hash, key id, signature)."""


@dataclass(frozen=True)
class ScopeRow:
    """One event of the scope: its record, or only the record's head where the caller needs just the hash."""

    position: int
    aggregate_id: str
    version: int
    topic: str
    record: bytes
    leaf_index: int | None

    def seal(self) -> SealedEvent:
        """The record's seal; the header the ledger writes is parsed directly (a hundred thousand
        ``json.loads`` calls cost more than the rest of the export), anything else the general way.
        For a head-only row the envelope is cut short: only the seal's fields are whole."""
        found = _HEADER.match(self.record)
        if found is None:
            return SealedEvent.from_record(self.record)
        hash_hex, key_id, signature = (group.decode("ascii") for group in found.groups())
        return SealedEvent(envelope=self.record[found.end() :], hash=hash_hex, signature=signature, key_id=key_id)


class ScopeEvents:
    """The events of ``aggregate_ids`` up to position ``until`` (all when None), and every event of
    ``also`` (the export's own record), each pass a fresh stream."""

    def __init__(self, engine: Engine, aggregate_ids: Sequence[uuid.UUID | str]) -> None:
        self.engine = engine
        self.ids = aggregate_ids
        self.until: int | None = None
        self.also: str | None = None

    def rows(self, *, heads_only: frozenset[str] = frozenset()) -> Iterator[ScopeRow]:
        """Each event with its leaf index (None before the log holds it); events of the topics in
        ``heads_only`` with only the head of their record."""
        sqlite = self.engine.dialect.name == "sqlite"
        column = notification_id_column(self.engine)
        mark = "?" if sqlite else "%s"
        params: list[Any] = []
        if heads_only:
            marks = ",".join([mark] * len(heads_only))
            head = f"substr(e.state, 1, {HEAD_BYTES})" if sqlite else f"substring(e.state from 1 for {HEAD_BYTES})"
            state = f"CASE WHEN e.topic IN ({marks}) THEN {head} ELSE e.state END"
            params += sorted(heads_only)
        else:
            state = "e.state"
        oid = "e.originator_id" if sqlite else "e.originator_id::text"
        where = "TRUE"
        if self.until is not None:
            where = f"(e.{column} <= {mark} OR e.originator_id = {mark})" if self.also else f"e.{column} <= {mark}"
            params.append(self.until)
            if self.also:
                params.append(uuid.UUID(self.also).hex if sqlite else self.also)
        # PostgreSQL hashes a bound uuid[] for ``= ANY`` and walks the events in notification order (a join
        # with unnest() was planned with a sort of every record, several times slower).
        wanted = "JOIN temp.export_scope w ON e.originator_id = w.id" if sqlite else ""
        scoped = "" if sqlite else f"e.originator_id = ANY({mark}::uuid[]) AND "
        sql = (
            f"SELECT e.{column}, {oid}, e.originator_version, e.topic, {state}, l.leaf_index "  # noqa: S608
            f"FROM {events_table(self.engine)} e {wanted} "
            f"LEFT JOIN tlog_leaves l ON l.notification_id = e.{column} WHERE {scoped}{where} ORDER BY e.{column}"
        )
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            if sqlite:
                yield from self._sqlite(raw, sql, params)
            else:
                ids = [str(a) for a in self.ids]
                if self.also:
                    ids.append(self.also)
                # The ids array comes after the CASE's topics and before the bounds.
                ordered = [*params[: len(heads_only)], ids, *params[len(heads_only) :]]
                cursor = raw.cursor(name=f"export_scope_{uuid.uuid4().hex}", binary=True)
                cursor.itersize = PAGE
                try:
                    cursor.execute(sql, ordered)
                    for nid, aggregate_id, version, topic, record, leaf in cursor:
                        yield ScopeRow(
                            int(nid), aggregate_id, int(version), topic, b"" if record is None else bytes(record), leaf
                        )
                finally:
                    cursor.close()
                    raw.rollback()

    def _sqlite(self, raw: Any, sql: str, params: list[Any]) -> Iterator[ScopeRow]:
        cursor = raw.cursor()
        try:
            cursor.execute("DROP TABLE IF EXISTS temp.export_scope")
            cursor.execute("CREATE TEMP TABLE export_scope (id TEXT PRIMARY KEY)")
            ids = {uuid.UUID(str(a)).hex for a in self.ids} | ({uuid.UUID(self.also).hex} if self.also else set())
            cursor.executemany("INSERT INTO temp.export_scope VALUES (?)", [(i,) for i in ids])
            cursor.execute(sql, params)
            while page := cursor.fetchmany(PAGE):
                for nid, aggregate_id, version, topic, record, leaf in page:
                    yield ScopeRow(
                        int(nid),
                        str(uuid.UUID(aggregate_id)),
                        int(version),
                        topic,
                        b"" if record is None else bytes(record),
                        None if leaf is None else int(leaf),
                    )
        finally:
            cursor.execute("DROP TABLE IF EXISTS temp.export_scope")
            cursor.close()
            raw.commit()  # ends the read (and the temporary table's) transaction
