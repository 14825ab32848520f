"""A repair to eventsourcing's connection pool: a failed get gives back the lock it took.

``ConnectionPool.get_connection`` (eventsourcing 9.5) takes the writer lock, or
counts a reader, before it waits for a free connection, and keeps it when that
wait times out or opening a connection fails. After one such failure every
later writer times out ("Timed out waiting for return of writer") until the
process restarts. That happens whenever a writer gets the writer lock but then
finds every connection in use until its timeout (a busy SQLite ledger).
:func:`install` wraps the method so that a failed get releases what it took;
the library's own refusals that take nothing (or release what they took) pass
through unchanged. ``tests/service/store/test_connection_pool.py`` holds both:
its leak tests fail without the wrapper.
"""

from __future__ import annotations

import functools
from typing import Any

from eventsourcing.persistence import ConnectionPool, ConnectionUnavailableError

# The refusals raised before the writer lock is held or a reader counted (or after the library released it).
_NOTHING_TAKEN = frozenset(
    {
        "Timed out waiting for connection pool semaphore",
        "Timed out waiting for return of writer",
        "Timed out waiting for return of reader",
    }
)


def _give_back(pool: Any, is_writer: bool | None) -> None:
    if is_writer is True:
        pool._num_writers -= 1
        pool._writer_lock.release()
    elif is_writer is False:
        with pool._no_readers:
            pool._num_readers -= 1
            if pool._num_readers == 0 and pool._mutually_exclusive_read_write:
                pool._no_readers.notify()


def install() -> None:
    """Wrap ``ConnectionPool.get_connection`` once (later calls do nothing)."""
    original = ConnectionPool.get_connection
    if getattr(original, "gives_back_on_failure", False):
        return

    @functools.wraps(original)
    def get_connection(self: Any, timeout: float | None = None, *, is_writer: bool | None = None) -> Any:
        try:
            return original(self, timeout, is_writer=is_writer)
        except Exception as exc:
            if not (isinstance(exc, ConnectionUnavailableError) and str(exc) in _NOTHING_TAKEN):
                _give_back(self, is_writer)
            raise

    get_connection.gives_back_on_failure = True  # type: ignore[attr-defined]
    ConnectionPool.get_connection = get_connection  # type: ignore[method-assign]
