"""Concurrent callers of one function share one call of it.

Serving and authentication ask the ledger the same question for many requests
at once ("is this deployment, this API key, still as I last read it?"); one
query started after every asker arrived answers all of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from service.common.batch import Failed, batch_else_each

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
KeyT = TypeVar("KeyT")


def once_per_key(memo: dict[KeyT, ResultT | Exception], key: KeyT, compute: Callable[[KeyT], ResultT]) -> ResultT:
    """``compute(key)``, or what it gave for ``key`` before (kept in ``memo``): its result, or its error again.

    For the requests served together in one batch: each distinct question is asked once.
    """
    if key not in memo:
        try:
            memo[key] = compute(key)
        except Exception as exc:
            memo[key] = exc
    found = memo[key]
    if isinstance(found, Exception):
        raise found
    return found


class _Call(Generic[ArgT, ResultT]):
    """One caller's argument, and its result or error once the group ran."""

    def __init__(self, item: ArgT) -> None:
        self.item = item
        self.ready = threading.Event()
        self.leads = False
        self.done = False
        self.result: ResultT | None = None
        self.error: BaseException | None = None

    def outcome(self) -> ResultT:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCall(Generic[ArgT, ResultT]):
    """Concurrent callers of ``run`` share one call of it.

    A caller that finds no call in progress leads: it runs ``run`` on the
    arguments queued so far (its own first, at most ``max_items``), hands each
    caller its result, and passes the lead to the oldest caller still waiting.
    No thread of its own, and no waiting when there is no concurrency. Every
    argument of a call arrived before the call started, so a call that reads
    the ledger sees at least what each of its callers could have seen.

    ``run`` returns one result per argument, in order. When it raises for a
    group, each argument is run again on its own, so one caller's bad input
    fails only that caller.
    """

    def __init__(self, run: Callable[[list[ArgT]], list[ResultT]], max_items: int = 64) -> None:
        self._run = run
        self._max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Call[ArgT, ResultT]] = []
        self._busy = False

    def __call__(self, item: ArgT) -> ResultT:
        """``run([item])[0]``, computed in one call with whatever other callers asked meanwhile."""
        call: _Call[ArgT, ResultT] = _Call(item)
        with self._lock:
            self._queue.append(call)
            call.leads = not self._busy
            self._busy = True
        if not call.leads:
            call.ready.wait()
            if not call.leads:
                return call.outcome()
        time.sleep(0)  # let threads that are ready to run (holding no GIL yet) join this group
        with self._lock:
            group, self._queue = self._queue[: self._max_items], self._queue[self._max_items :]
        try:
            self._execute(group)
        finally:
            for other in group:
                if not other.done:  # interrupted: nobody may wait forever
                    other.error, other.done = RuntimeError("the shared call was interrupted"), True
                if other is not call:
                    other.ready.set()
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].ready.set()
                else:
                    self._busy = False
        return call.outcome()

    def _execute(self, group: list[_Call[ArgT, ResultT]]) -> None:
        run = self._run
        outcomes = batch_else_each(run, lambda item: run([item])[0], [c.item for c in group])
        for one, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Failed):
                one.error = outcome.error
            else:
                one.result = outcome
            one.done = True
