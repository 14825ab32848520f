"""A dictionary that forgets everything once it holds its limit.

Processes remember what they read (deployments, model versions, API keys,
aggregate heads) keyed by something callers choose, so the number of keys is
not theirs to bound. Forgetting all at once is the cheapest policy: every
entry is only a shortcut (the next request reads it again), there is no
ordering to keep on each hit, and a get is the dictionary's own ``get``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

KeyT = TypeVar("KeyT")
ValueT = TypeVar("ValueT")


class BoundedCache(Generic[KeyT, ValueT]):
    """At most ``limit`` entries: storing into a full cache first clears it (not LRU).

    No lock of its own: each method is a few dictionary operations, which the
    interpreter lock keeps whole, as it did for the plain dictionaries this
    replaces; callers that need more (a check and a store together) lock around.
    """

    __slots__ = ("_entries", "get", "limit")

    get: Callable[[KeyT], ValueT | None]
    """The value kept for a key, or None: the dictionary's own ``get`` (no wrapper call on hot paths)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a bounded cache holds at least one entry, not {limit}")
        self.limit = limit
        self._entries: dict[KeyT, ValueT] = {}
        self.get = self._entries.get

    def put(self, key: KeyT, value: ValueT) -> None:
        """Keep ``value`` for ``key``, clearing the cache first when it is full."""
        entries = self._entries
        if len(entries) >= self.limit:
            entries.clear()
        entries[key] = value

    def setdefault(self, key: KeyT, value: ValueT) -> ValueT:
        """The value kept for ``key``, else ``value`` kept (after clearing a full cache) and returned.

        For values that must be one per key even when two threads create them
        at once (a shared call per model): the first stored wins.
        """
        entries = self._entries
        if key not in entries and len(entries) >= self.limit:
            entries.clear()
        return entries.setdefault(key, value)

    def make_room(self, count: int) -> None:
        """Clear the cache unless ``count`` more entries fit (before storing a batch of them)."""
        if len(self._entries) + count > self.limit:
            self._entries.clear()

    def pop(self, key: KeyT) -> ValueT | None:
        """Forget ``key``; the value kept for it, or None."""
        return self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
