"""A Merkle tree's right frontier: enough to extend a verified tree without its old leaves.

The compact range of a tree of ``n`` leaves is the list of complete subtrees,
largest first, whose leaves together are ``[0, n)`` (the nodes
:func:`~domain.integrity.merkle.nodes_needed_for_root` names). It folds into
the RFC 6962 root; appending a leaf merges equal-sized subtrees, producing
exactly the new complete nodes a stored tree must hold. Incremental
verification keeps the compact range of the last verified checkpoint and
extends it with the events logged since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.integrity import merkle

Node = tuple[int, int, bytes]
"""A complete subtree: (level, index, hash)."""


@dataclass
class CompactRange:
    """The complete subtrees, largest first, covering leaves ``[0, size)``."""

    size: int = 0
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        expected = merkle.nodes_needed_for_root(self.size)
        if [(level, index) for level, index, _ in self.nodes] != expected:
            raise ValueError(f"the nodes are not the compact range of a tree of {self.size} leaves")

    def root(self) -> bytes:
        """The RFC 6962 root of the tree so far."""
        if not self.nodes:
            return merkle.EMPTY_ROOT
        digest = self.nodes[-1][2]
        for _, _, left in reversed(self.nodes[:-1]):
            digest = merkle.node_hash(left, digest)
        return digest

    def append(self, leaf: bytes) -> list[Node]:
        """Add the leaf hash ``leaf``; return the complete nodes it completes (the leaf's own first)."""
        level, index, digest = 0, self.size, leaf
        made: list[Node] = [(0, index, leaf)]
        while self.nodes and self.nodes[-1][0] == level:
            _, left_index, left = self.nodes.pop()
            level, index, digest = level + 1, left_index >> 1, merkle.node_hash(left, digest)
            made.append((level, index, digest))
        self.nodes.append((level, index, digest))
        self.size += 1
        return made
