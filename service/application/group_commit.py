"""Group commit: concurrent writers share one transaction and one batch of signatures.

Request threads hand their new aggregates (or bare new events, such as a
prediction's ``Made`` event) to the committer and wait. One writer thread
takes everything queued, seals it (signatures in parallel on every core),
inserts it in one transaction and then answers every request with its own
recordings. A response is therefore sent only after its events are durable,
and under load the cost of a commit is shared by every request that arrived
meanwhile. Every command of the API process goes through it
(:meth:`LedgerCore.share_commits`); serving hands over predictions with
:meth:`GroupCommitter.submit`.

What each request sees is what it would see alone:

* A request's own events are recorded together or not at all.
* Requests that touch the same aggregate are never in one transaction: the
  later one waits for the next round of the same group, after the earlier one
  committed, so optimistic concurrency judges it as if the two had come one
  after the other (the loser gets :class:`~domain.errors.VersionConflict`).
* When a shared transaction fails (a conflict with another process, a payload
  that cannot be encoded), each of its requests is recorded on its own, so one
  bad request never fails its neighbours.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Recording

from domain.integrity.ledger_key import KEYRING_ID
from service.common.batching import BatchThread, WriterStopped


class Recorder(Protocol):
    """What the committer needs of the ledger (:class:`~service.application.ledger_core.LedgerCore`)."""

    def save_now(self, *objs: Any, **kwargs: Any) -> list[Recording[uuid.UUID]]:
        """Record in one transaction of its own."""
        ...

    def share_commits(self, committer: GroupCommitter | None, only: GroupCommitter | None = None) -> None:
        """Record later saves through ``committer``."""
        ...


__all__ = ["GroupCommitter", "WriterStopped"]

WAIT_SECONDS = 60.0


@dataclass
class _Request:
    items: list[Any]  # aggregates with pending events, and bare events
    future: Future[int] = field(default_factory=Future)
    recordings: list[Recording[uuid.UUID]] = field(default_factory=list)

    @functools.cached_property
    def events(self) -> int:
        return sum(len(_events_of(item)) for item in self.items)

    @functools.cached_property
    def aggregate_ids(self) -> frozenset[uuid.UUID]:
        """Every aggregate this request writes to."""
        return frozenset(item.id if isinstance(item, Aggregate) else item.originator_id for item in self.items)


def _events_of(item: Any) -> list[Any]:
    """The events an item records: an aggregate's pending events, or the item itself (a bare event)."""
    return list(item._pending_events) if isinstance(item, Aggregate) else [item]


def rounds(group: Sequence[_Request]) -> list[list[_Request]]:
    """Split a group into transactions in which no aggregate is written by two requests.

    A request goes to the round after the last one holding a request that
    touches one of its aggregates, so requests on one aggregate keep their
    order and are committed one after the other. A change of the ledger's
    keyring (a key rotation or revocation) gets a round after every earlier
    request and before every later one: events after a rotation must be signed
    with the new key (the keyring check of the insert makes the writer take it).
    """
    touched: list[set[uuid.UUID]] = []
    members: list[list[_Request]] = []
    barrier = -1  # the round of the last keyring change: everything after it is signed with the key it installs
    for request in group:
        ids = request.aggregate_ids
        after = len(touched) - 1 if KEYRING_ID in ids else barrier
        for index in range(after + 1, len(touched)):
            if not touched[index].isdisjoint(ids):
                after = index
        if KEYRING_ID in ids:
            barrier = after + 1
        if after + 1 == len(touched):
            touched.append(set())
            members.append([])
        touched[after + 1].update(ids)
        members[after + 1].append(request)
    return members


class GroupCommitter(BatchThread[_Request]):
    """One writer thread recording the aggregates of many requests per transaction."""

    def __init__(self, ledger: Recorder, max_events: int = 20_000) -> None:
        super().__init__("mlledger-group-commit", max_events)
        self._ledger = ledger
        self.transactions = 0

    def submit(self, items: list[Any]) -> Future[int]:
        """Queue aggregates and events for recording; the future gives the ledger position once durable."""
        request = _Request(items)
        self._put(request)
        return request.future

    def record(self, items: list[Any], timeout: float = WAIT_SECONDS) -> int:
        """Submit and wait: the ledger position of the last event."""
        return self.submit(items).result(timeout=timeout)

    def save(self, items: list[Any], timeout: float = WAIT_SECONDS) -> list[Recording[uuid.UUID]]:
        """Submit and wait: the recordings of ``items``' events, in order (what ``Ledger.save`` returns)."""
        request = _Request(items)
        self._put(request)
        request.future.result(timeout=timeout)
        return request.recordings

    def on_writer_thread(self) -> bool:
        """Whether the caller is the writer thread itself (which saves directly)."""
        return self._thread is threading.current_thread()

    def stop(self) -> None:
        """Record what is queued, then end the thread; later saves of the ledger are its own again."""
        self._ledger.share_commits(None, only=self)
        super().stop()

    def _weight(self, item: _Request) -> int:
        return item.events

    def _fail(self, batch: list[_Request], error: BaseException) -> None:
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _serve(self, group: list[_Request]) -> None:
        for together in rounds(group):
            self._commit(together)

    def _commit(self, together: list[_Request]) -> None:
        try:
            self._save(together)
        except Exception as exc:
            if len(together) == 1:
                together[0].future.set_exception(exc)
                return
            for request in together:  # isolate the request that failed the shared transaction
                try:
                    self._save([request])
                except Exception as error:
                    request.future.set_exception(error)
                else:
                    request.future.set_result(request.recordings[-1].notification.id)
            return
        for request in together:
            request.future.set_result(request.recordings[-1].notification.id)

    def _save(self, requests: list[_Request]) -> None:
        """Save the requests' items in one transaction and hand each request its own recordings.

        A failed save leaves the aggregates' pending events in place, so they can be retried.
        """
        items = [item for request in requests for item in request.items]
        pending = [_events_of(item) for item in items]
        try:
            recordings = self._ledger.save_now(*items)
        except Exception:
            for item, events in zip(items, pending, strict=True):
                if isinstance(item, Aggregate):
                    item._pending_events[:] = events
            raise
        self.transactions += 1
        start = 0
        for request in requests:
            stop = start + request.events
            request.recordings = recordings[start:stop]
            start = stop
