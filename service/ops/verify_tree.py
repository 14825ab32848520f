"""The transparency log checked leaf by leaf, in memory that does not grow with the log.

``mlledger verify`` reads the log's leaves in pages, in leaf order, and folds
each into a :class:`~domain.integrity.compact_range.CompactRange`: appending a
leaf yields exactly the complete nodes it finishes, and these are compared with
the stored nodes of the same level and indexes, a page at a time. What stays
in memory is the frontier (one node per level), one page per level and the root
at each checkpoint's size, never the tree.

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


class TreeCheck:
    """Folds leaves into the tree and compares every node it completes with the stored one.

    A level's completed nodes come in index order, so they are kept a page at a
    time and compared with the stored page of the same indexes in one step; only
    a page that differs is looked at node by node.
    """

    def __init__(self, rows: RawRows, checkpoint_sizes: set[int], page: int = PAGE) -> None:
        self.rows, self.page = rows, page
        self.frontier = CompactRange()
        self.sizes = checkpoint_sizes
        self.roots: dict[int, bytes] = {}
        """The root of the tree at each checkpoint size the fold passed."""
        self.made: list[list[bytes]] = []
        """Per level, the completed nodes not compared yet."""
        self.compared: list[int] = []
        """Per level, how many nodes were compared (the index of the first in ``made``)."""
        self.wrong: tuple[int, int, str] | None = None

    def add(self, leaf_hash: bytes) -> None:
        """Append the next leaf; check the nodes it completes (a page at a time)."""
        made = self.made
        for level, _, digest in self.frontier.append(leaf_hash):
            if level == len(made):
                made.append([])
                self.compared.append(0)
            made[level].append(digest)
            if len(made[level]) == self.page:
                self._compare(level)
        if self.frontier.size in self.sizes:
            self.roots[self.frontier.size] = self.frontier.root()

    def _note(self, level: int, index: int, state: str) -> None:
        if self.wrong is None or (level, index) < self.wrong[:2]:
            self.wrong = (level, index, state)

    def _compare(self, level: int) -> None:
        made, first = self.made[level], self.compared[level]
        stored = self.rows(
            "SELECT node_index, hash FROM tlog_nodes WHERE level = %s AND node_index >= %s AND node_index < %s "
            "ORDER BY node_index",
            (level, first, first + len(made)),
        )
        if len(stored) != len(made) or [bytes(digest) for _, digest in stored] != made:
            found = {int(index): bytes(digest) for index, digest in stored}
            for offset, digest in enumerate(made):
                kept = found.get(first + offset)
                if kept != digest:
                    self._note(level, first + offset, "missing" if kept is None else "changed")
                    break
        self.compared[level] = first + len(made)
        made.clear()

    def finish(self, top_level: int | None) -> list[Finding]:
        """After the last leaf: the nodes not compared yet, then nodes stored beyond the tree (extra); the
        first wrong node, if any."""
        for level in range(len(self.made)):
            if self.made[level]:
                self._compare(level)
        for level in range(0 if top_level is None else top_level + 1):
            after = self.compared[level] if level < len(self.compared) else 0
            extra = self.rows(
                "SELECT min(node_index) FROM tlog_nodes WHERE level = %s AND node_index >= %s", (level, after)
            )
            if extra and extra[0][0] is not None:
                self._note(level, int(extra[0][0]), "extra")
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
