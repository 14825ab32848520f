"""Run a batch in one call, else each item alone, so one bad item fails only itself.

Serving runs the rows of many requests through one model call, and shared
calls (:class:`~service.common.group_call.GroupCall`) run many callers'
arguments together. When such a call raises, nobody knows whose item broke
it; running each item on its own finds out, and the others still get their
results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class Failed:
    """An item whose call raised ``error``."""

    error: Exception


def batch_else_each(
    run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
    run_one: Callable[[ItemT], ResultT],
    items: list[ItemT],
) -> Sequence[ResultT | Failed]:
    """One result per item, in order: ``run_batch(items)``, or when it raises, ``run_one(item)`` for each.

    ``run_batch`` must give one result per item (else it counts as raising).
    A batch of one item is not run again: its error is its own. Only
    :class:`Exception` is caught; an interrupt ends the whole batch.
    """
    try:
        results = run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batched call gave {len(results)} results for {len(items)} items")
    except Exception as exc:
        if len(items) == 1:
            return [Failed(exc)]
        return [_alone(run_one, item) for item in items]
    return results


def _alone(run_one: Callable[[ItemT], ResultT], item: ItemT) -> ResultT | Failed:
    try:
        return run_one(item)
    except Exception as exc:
        return Failed(exc)
