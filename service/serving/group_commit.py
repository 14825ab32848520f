"""Group commit: concurrent requests share one transaction and one batch of signatures.

Request threads hand their new aggregates (or bare new events, such as a
prediction's ``Made`` event) to :meth:`GroupCommitter.submit` and
wait on the returned future. One writer thread takes everything queued, seals
it (signatures in parallel on every core), inserts it in one transaction and
then resolves every future with the ledger position of its last event. A
response is therefore sent only after its events are durable, and under load
the cost of a commit is shared by every request that arrived meanwhile.

When a shared transaction fails (a replayed request id, say), the writer
retries each request's aggregates on their own, so one bad request never
fails its neighbours.

:class:`~service.common.group_call.GroupCall` applies the same idea to work before
the commit: concurrent callers of one function (a freshness check, a model's
predictions) share one call of it.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.domain import Aggregate

from service.application.ledger_core import LedgerCore
from service.serving.batching import BatchThread, WriterStopped

__all__ = ["GroupCommitter", "WriterStopped"]


@dataclass
class _Request:
    items: list[Any]  # aggregates with pending events, and bare events
    future: Future[int] = field(default_factory=Future)

    @functools.cached_property
    def events(self) -> int:
        return sum(len(_events_of(item)) for item in self.items)


def _events_of(item: Any) -> list[Any]:
    """The events an item records: an aggregate's pending events, or the item itself (a bare event)."""
    return list(item._pending_events) if isinstance(item, Aggregate) else [item]


class GroupCommitter(BatchThread[_Request]):
    """One writer thread recording the aggregates of many requests per transaction."""

    def __init__(self, ledger: LedgerCore, max_events: int = 20_000) -> None:
        super().__init__("mlledger-group-commit", max_events)
        self._ledger = ledger
        self.transactions = 0

    def submit(self, items: list[Any]) -> Future[int]:
        """Queue aggregates and events for recording; the future gives the ledger position once durable."""
        request = _Request(items)
        self._put(request)
        return request.future

    def record(self, items: list[Any], timeout: float = 60.0) -> int:
        """Submit and wait: the ledger position of the last event."""
        return self.submit(items).result(timeout=timeout)

    def _weight(self, item: _Request) -> int:
        return item.events

    def _fail(self, batch: list[_Request], error: BaseException) -> None:
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _serve(self, group: list[_Request]) -> None:
        try:
            positions = self._save([a for request in group for a in request.items])
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for request in group:  # isolate the request that failed the shared transaction
                try:
                    own = self._save(request.items)
                except Exception as error:
                    request.future.set_exception(error)
                else:
                    request.future.set_result(own[id(request.items[-1])])
            return
        for request in group:
            request.future.set_result(positions[id(request.items[-1])])

    def _save(self, items: list[Any]) -> dict[int, int]:
        """Save in one transaction; map each item (by identity) to the position of its last event.

        A failed save leaves the aggregates' pending events in place, so they can be retried.
        """
        pending = [_events_of(item) for item in items]
        try:
            recordings = self._ledger.save(*items)
        except Exception:
            for item, events in zip(items, pending, strict=True):
                if isinstance(item, Aggregate):
                    item._pending_events[:] = events
            raise
        self.transactions += 1
        positions: dict[int, int] = {}
        index = 0
        for item, events in zip(items, pending, strict=True):
            index += len(events)
            positions[id(item)] = recordings[index - 1].notification.id
        return positions
