"""One thread that serves what was queued as batches: the group committer's and the predict queue's.

The thread starts with the first item. Each time it looks, it takes every
item queued so far (up to a total weight; an item that would pass it waits
for the next batch) and serves them together, so under load the fixed cost
of a batch is shared by everything that arrived meanwhile, and with no load
an item is served at once. :meth:`BatchThread.stop` serves what is queued,
then ends the thread; later items are refused with 503.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Generic, TypeVar

from domain.errors import LedgerError

log = logging.getLogger(__name__)
ItemT = TypeVar("ItemT")


class WriterStopped(LedgerError):
    """The service is shutting down."""

    title = "Service stopping"


class BatchThread(Generic[ItemT]):
    """Items queued by any thread, served in batches by one thread of its own.

    Subclasses say how to serve a batch (:meth:`_serve`), how to fail one when
    serving raised unexpectedly (:meth:`_fail`: nobody may wait forever) and,
    optionally, what an item weighs (:meth:`_weight`, 1 by default).
    """

    def __init__(self, name: str, max_weight: int) -> None:
        self._name = name
        self._max_weight = max_weight
        self._queue: queue.SimpleQueue[ItemT | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.batches = 0
        self.requests = 0

    def _put(self, item: ItemT) -> None:
        """Queue ``item`` (starting the thread with the first one); refused once stopping."""
        with self._lock:
            if self._stopped:
                raise WriterStopped("the service is stopping; retry shortly")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self.requests += 1
        self._queue.put(item)

    def stop(self) -> None:
        """Serve what is queued, then end the thread."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=60)
        log.info("%s: %d batches for %d requests", self._name, self.batches, self.requests)

    def _weight(self, item: ItemT) -> int:
        return 1

    def _serve(self, batch: list[ItemT]) -> None:
        raise NotImplementedError

    def _fail(self, batch: list[ItemT], error: BaseException) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        held: ItemT | None = None  # the item that did not fit in the last batch
        while True:
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:
                return
            batch, weight, stop = [first], self._weight(first), False
            while weight < self._max_weight:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                item_weight = self._weight(item)
                if weight + item_weight > self._max_weight:
                    held = item
                    break
                batch.append(item)
                weight += item_weight
            self.batches += 1
            try:
                self._serve(batch)
            except BaseException as exc:  # never leave anyone waiting
                log.exception("%s: serving a batch of %d failed", self._name, len(batch))
                self._fail(batch, exc)
            if stop:
                return
