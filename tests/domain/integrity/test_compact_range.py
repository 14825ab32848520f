"""The compact range extends a tree as the whole tree would be recomputed."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.integrity import merkle
from domain.integrity.compact_range import CompactRange
from domain.integrity.verification import complete_nodes


def leaves(count: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(count)]


@given(st.integers(0, 70), st.integers(0, 70))
def test_extending_a_frontier_gives_the_roots_and_nodes_of_the_whole_tree(old: int, more: int) -> None:
    hashes = leaves(old + more)
    everything = complete_nodes(hashes)
    frontier = CompactRange(old, [(lv, ix, everything[(lv, ix)]) for lv, ix in merkle.nodes_needed_for_root(old)])

    made = {}
    for leaf in hashes[old:]:
        made.update({(lv, ix): digest for lv, ix, digest in frontier.append(leaf)})

    assert frontier.root() == merkle.root_hash(hashes)
    assert made == {node: digest for node, digest in everything.items() if (node[1] + 1) << node[0] > old}


def test_nodes_that_are_not_a_frontier_are_refused() -> None:
    with pytest.raises(ValueError, match="compact range"):
        CompactRange(3, [(0, 0, bytes(32)), (0, 1, bytes(32)), (0, 2, bytes(32))])
