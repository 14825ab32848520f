"""The insert-time check that a batch was signed with the ledger's current key.

A batch is signed before it is inserted; another process may rotate the ledger
key in between. The recorders therefore look up the keyring's version inside the
insert transaction, while they hold the event table's write lock (PostgreSQL:
the table lock; SQLite: the database's write lock, taken by the insert itself),
and refuse the batch with :class:`KeyringMoved` when the keyring has changed
since the batch's signer was last seen current. The event store then lets the
ledger catch up with the rotation and signs again (tests/service/application/
test_ledger_key_lifetimes.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import StoredEvent

from domain.integrity.ledger_key import KEYRING_ID

KEYRING_VERSION = "keyring_version"
"""The keyword argument of ``insert_events`` that carries the keyring version the batch was signed at."""


class KeyringMoved(Exception):
    """The keyring changed after the batch was signed (a rotation or revocation by another process)."""


def keyring_events_in(stored_events: Sequence[StoredEvent]) -> int:
    """How many of the batch's events are the keyring's own."""
    return sum(1 for s in stored_events if s.originator_id == KEYRING_ID)


def check_keyring(found: int | None, expected: int) -> None:
    """Raise :class:`KeyringMoved` unless the keyring is at ``expected`` (None: no keyring yet, version 0)."""
    if (found or 0) != expected:
        raise KeyringMoved(f"the ledger keyring is at version {found or 0}, the batch was signed at {expected}")
