"""``mlledger verify``'s streamed tree check finds what comparing the whole tree at once finds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from domain.integrity import merkle
from domain.integrity.verification import complete_nodes
from service.ops.verify_tree import TreeCheck, stream_leaves

LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(37)]


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE tlog_leaves (leaf_index, notification_id, aggregate_id, version, leaf_hash)")
    conn.execute("CREATE TABLE tlog_nodes (level, node_index, hash, PRIMARY KEY (level, node_index))")
    conn.executemany(
        "INSERT INTO tlog_leaves VALUES (?, ?, ?, 1, ?)",
        [(i, 100 + i, f"aggregate-{i}", leaf) for i, leaf in enumerate(LEAVES)],
    )
    conn.executemany("INSERT INTO tlog_nodes VALUES (?, ?, ?)", [(*k, v) for k, v in complete_nodes(LEAVES).items()])
    yield conn
    conn.close()


def _check(conn: sqlite3.Connection) -> tuple[TreeCheck, list[str]]:
    def rows(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return conn.execute(sql.replace("%s", "?"), params).fetchall()

    tree = TreeCheck(rows, {5, 16, 37}, page=4)
    for leaf in stream_leaves(rows, page=6):
        tree.add(leaf.leaf_hash)
    (top,) = conn.execute("SELECT max(level) FROM tlog_nodes").fetchone()
    return tree, [f.describe() for f in tree.finish(top)]


def test_an_untouched_tree_passes_and_gives_the_root_at_each_checkpoint(db: sqlite3.Connection) -> None:
    tree, findings = _check(db)

    assert findings == []
    assert tree.roots == {size: merkle.root_hash(LEAVES[:size]) for size in (5, 16, 37)}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("UPDATE tlog_nodes SET hash = x'00' WHERE level = 2 AND node_index = 5", "(level 2, index 5) covering"),
        ("DELETE FROM tlog_nodes WHERE level = 1 AND node_index = 9", "(level 1, index 9) covering"),
        ("INSERT INTO tlog_nodes VALUES (3, 9, x'00')", "(level 3, index 9) is extra"),
    ],
)
def test_the_first_wrong_node_is_named(db: sqlite3.Connection, edit: str, named: str) -> None:
    db.execute(edit)
    db.execute("UPDATE tlog_nodes SET hash = x'01' WHERE level = 4 AND node_index = 1")  # a later, higher one

    _, findings = _check(db)

    assert len(findings) == 1
    assert named in findings[0], findings


def test_a_node_stored_above_the_tree_is_extra(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO tlog_nodes VALUES (7, 0, x'00')")

    _, findings = _check(db)

    assert len(findings) == 1
    assert "node (level 7, index 0) covering this event is extra" in findings[0]
