"""A get that fails after taking the writer lock (or counting a reader) gives it back."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventsourcing.persistence import ConnectionUnavailableError
from eventsourcing.sqlite import SQLiteConnectionPool

import service.store.persistence  # noqa: F401  (installs the repair, as opening the services does)


def _pool(tmp_path: Path) -> SQLiteConnectionPool:
    return SQLiteConnectionPool(db_name=str(tmp_path / "pool.db"), pool_size=1, max_overflow=0, pool_timeout=0.2)


def test_a_writer_that_found_no_free_connection_leaves_the_writer_lock_free(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    reader = pool.get_connection(is_writer=False)
    with pytest.raises(ConnectionUnavailableError, match="return of connection"):
        pool.get_connection(is_writer=True)  # takes the writer lock, then finds the only connection in use
    pool.put_connection(reader)

    writer = pool.get_connection(is_writer=True)  # unrepaired: "Timed out waiting for return of writer", forever

    pool.put_connection(writer)
    assert pool._num_writers == 0 and pool._num_readers == 0
    pool.close()


def test_a_reader_that_found_no_free_connection_is_not_counted(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    writer = pool.get_connection(is_writer=True)
    with pytest.raises(ConnectionUnavailableError, match="return of connection"):
        pool.get_connection(is_writer=False)
    assert pool._num_readers == 0
    pool.put_connection(writer)
    pool.close()


def test_a_refusal_that_took_nothing_gives_nothing_back(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    writer = pool.get_connection(is_writer=True)
    with pytest.raises(ConnectionUnavailableError, match="return of writer"):
        pool.get_connection(is_writer=True)  # the lock is another's: it must stay held by it
    assert pool._writer_lock.locked() and pool._num_writers == 1
    pool.put_connection(writer)
    assert not pool._writer_lock.locked()
    pool.close()
