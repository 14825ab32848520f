"""The event store's SQLite recorder: the library's, with the key check of
:mod:`service.store.keyring_guard` inside the insert transaction.

The insert runs first: it takes SQLite's write lock (waiting out the busy
timeout), after which the transaction sees every committed write and no other
writer can commit until it ends; only then is the keyring's version read. (A
read first would start a snapshot that SQLite refuses to upgrade to a write
once another connection has committed.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from domain.integrity.ledger_key import KEYRING_ID
from service.store.keyring_guard import KEYRING_VERSION, check_keyring, keyring_events_in


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """Inserts a batch only when it was signed with the current ledger key."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        expected = kwargs.get(KEYRING_VERSION)
        if expected is not None:
            c.execute(
                f"SELECT max(originator_version) FROM {self.events_table_name} WHERE originator_id = ?",  # noqa: S608
                (KEYRING_ID.hex,),
            )
            (found,) = c.fetchone()
            check_keyring(found, expected + keyring_events_in(stored_events))
        return ids
