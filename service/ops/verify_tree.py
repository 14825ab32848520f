"""The transparency log checked leaf by leaf, in memory that does not grow with the log.

``mlledger verify`` reads the log's leaves in pages, in leaf order, and folds
each into a :class:`~domain.integrity.compact_range.CompactRange`: appending a
leaf yields exactly the complete nodes it finishes, and these are compared with
the stored nodes, read level by level in pages as the fold reaches them. What
stays in memory is the frontier (one node per level), one page per level and
the root at each checkpoint's size, never the tree.

The first node found wrong is the smallest (level, index) that is missing,
extra or changed, as when the whole tree is compared at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from domain.integrity.compact_range import CompactRange
from domain.integrity.verification import UNPLACED, Finding, Leaf

PAGE = 10_000

RawRows = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
"""Runs SQL with ``%s`` parameters and returns its rows."""


def stream_leaves(rows: RawRows, first: int = 0, page: int = PAGE) -> Iterator[Leaf]:
    """The stored leaves from leaf index ``first`` on, in order, read a page at a time."""
    after = first - 1
    while True:
        found = rows(
            "SELECT leaf_index, notification_id, aggregate_id, version, leaf_hash FROM tlog_leaves "
            "WHERE leaf_index > %s ORDER BY leaf_index LIMIT %s",
            (after, page),
        )
        for index, nid, aggregate_id, version, digest in found:
            yield Leaf(int(index), int(nid), aggregate_id, int(version), bytes(digest))
        if len(found) < page:
            return
        after = int(found[-1][0])


class _StoredLevel:
    """The stored nodes of one level, in index order, a page at a time."""

    def __init__(self, rows: RawRows, level: int, page: int) -> None:
        self.rows, self.level, self.page = rows, level, page
        self.buffer: list[tuple[int, bytes]] = []
        self.at = 0
        self.after = -1
        self.done = False

    def peek(self) -> tuple[int, bytes] | None:
        if self.at == len(self.buffer) and not self.done:
            found = self.rows(
                "SELECT node_index, hash FROM tlog_nodes WHERE level = %s AND node_index > %s "
                "ORDER BY node_index LIMIT %s",
                (self.level, self.after, self.page),
            )
            self.buffer = [(int(index), bytes(digest)) for index, digest in found]
            self.at = 0
            self.done = len(found) < self.page
            if found:
                self.after = self.buffer[-1][0]
        return self.buffer[self.at] if self.at < len(self.buffer) else None

    def pop(self) -> None:
        self.at += 1


class TreeCheck:
    """Folds leaves into the tree and compares every node it completes with the stored one."""

    def __init__(self, rows: RawRows, checkpoint_sizes: set[int], page: int = PAGE) -> None:
        self.rows, self.page = rows, page
        self.frontier = CompactRange()
        self.sizes = checkpoint_sizes
        self.roots: dict[int, bytes] = {}
        """The root of the tree at each checkpoint size the fold passed."""
        self.levels: list[_StoredLevel] = []
        self.wrong: tuple[int, int, str] | None = None

    def add(self, leaf_hash: bytes) -> None:
        """Append the next leaf; check the nodes it completes."""
        for level, index, digest in self.frontier.append(leaf_hash):
            self._compare(level, index, digest)
        if self.frontier.size in self.sizes:
            self.roots[self.frontier.size] = self.frontier.root()

    def _stored(self, level: int) -> _StoredLevel:
        while len(self.levels) <= level:
            self.levels.append(_StoredLevel(self.rows, len(self.levels), self.page))
        return self.levels[level]

    def _note(self, level: int, index: int, state: str) -> None:
        if self.wrong is None or (level, index) < self.wrong[:2]:
            self.wrong = (level, index, state)

    def _compare(self, level: int, index: int, digest: bytes) -> None:
        stored = self._stored(level)
        while True:
            head = stored.peek()
            if head is None or head[0] > index:
                self._note(level, index, "missing")
                return
            stored.pop()
            if head[0] == index:
                if head[1] != digest:
                    self._note(level, index, "changed")
                return
            self._note(level, head[0], "extra")

    def finish(self, top_level: int | None) -> list[Finding]:
        """After the last leaf: nodes stored beyond the tree are extra; the first wrong node, if any."""
        for level in range(0 if top_level is None else top_level + 1):
            head = self._stored(level).peek()
            if head is not None:
                self._note(level, head[0], "extra")
        if self.wrong is None:
            return []
        level, index, state = self.wrong
        leaf = self.rows(
            "SELECT notification_id, aggregate_id, version FROM tlog_leaves WHERE leaf_index = %s", (index << level,)
        )
        if leaf:
            nid, aggregate_id, version = leaf[0]
            return [
                Finding(
                    int(nid),
                    aggregate_id,
                    int(version),
                    f"transparency log node (level {level}, index {index}) covering this event is {state}",
                )
            ]
        return [Finding(UNPLACED, "-", 0, f"transparency log node (level {level}, index {index}) is {state}")]
