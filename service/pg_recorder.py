"""The event store's PostgreSQL recorder, tuned for a signed ledger.

It is the library's recorder with two changes to the insert: no NOTIFY (the
projectors poll; nobody listens), and rows sent as four binary arrays through
``unnest`` instead of a text-encoded composite array (psycopg otherwise escapes
every row with regular expressions). Creating the tables and the insert
function is serialised with an advisory lock: PostgreSQL answers two processes
that run ``CREATE OR REPLACE FUNCTION`` at once with "tuple concurrently
updated", which stopped runners started together. The table lock that keeps notification ids
in commit order is kept as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

CREATE_TABLE_LOCK = 0x6D6C6C6564676572  # "mlledger": one key for every process that opens the event store


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """Inserts a batch of sealed events in one binary statement."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unnest_insert = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        curs.execute(SQL("SELECT pg_advisory_xact_lock(%s)"), (CREATE_TABLE_LOCK,), prepare=False)
        super()._create_table(curs)

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any) -> None:
        self._lock_table(curs)
        curs.execute(
            self._unnest_insert,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            binary=True,
        )
