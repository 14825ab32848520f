"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

Hashes follow RFC 9162 section 2.1.1 with SHA-256::

    leaf hash  = SHA-256(0x00 || data)
    node hash  = SHA-256(0x01 || left || right)
    empty root = SHA-256("")

Two families of functions compute the same values:

* The *list* functions (:func:`root_hash`, :func:`inclusion_proof`,
  :func:`consistency_proof`) take every leaf hash of the tree. They are direct
  transcriptions of the RFC 6962 recursive definitions (MTH, PATH, PROOF) and
  serve as the reference the node functions are tested against.

* The *node* functions never look at more than O(log n) hashes. They read
  **complete subtree nodes** through an accessor ``get_node(level, index)``:
  the node at ``(level, index)`` is the root of the perfect subtree over the
  leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 nodes are the
  leaf hashes themselves. A log stores each node once, when the append that
  completes it happens (see :class:`CompactRange`), and never rewrites it.

  For a database-backed store, ``nodes_needed_for_*`` lists exactly which
  ``(level, index)`` pairs a root or proof reads, so they can be fetched in one
  query and handed to the ``*_from_nodes`` function as a dict lookup.

The verifiers (:func:`verify_inclusion`, :func:`verify_consistency`) are the
RFC 9162 sections 2.1.3.2 and 2.1.4.2 algorithms. They return ``False``, and
never raise, on any malformed input.

Nothing in this module performs I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeGuard

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeGetter",
    "NodeId",
    "consistency_proof",
    "consistency_proof_from_nodes",
    "inclusion_proof",
    "inclusion_proof_from_nodes",
    "leaf_hash",
    "node_hash",
    "nodes_needed_for_consistency",
    "nodes_needed_for_inclusion",
    "nodes_needed_for_root",
    "root_from_nodes",
    "root_hash",
    "subtree_hash",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final[int] = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT: Final[bytes] = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves: SHA-256 of the empty string."""

MAX_TREE_SIZE: Final[int] = 2**64 - 1
"""Largest tree size the verifiers accept (tree sizes are uint64 on the wire)."""

_LEAF_PREFIX: Final[bytes] = b"\x00"
_NODE_PREFIX: Final[bytes] = b"\x01"

NodeId = tuple[int, int]
"""``(level, index)`` of a complete subtree node."""

NodeGetter = Callable[[int, int], bytes]
"""``get_node(level, index) -> hash`` of a stored complete subtree node."""

_Range = tuple[int, int]


# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Hash one log entry into a leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes into their parent: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> TypeGuard[bytes | bytearray]:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TREE_SIZE


def _require_hash(value: object, what: str) -> bytes:
    if not _is_hash(value):
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")
    return bytes(value)


def _require_count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


# --------------------------------------------------------------------------
# Reference (list based) RFC 6962 definitions
# --------------------------------------------------------------------------


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """RFC 6962 MTH(D[lo:hi]) over already hashed leaves."""
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def _checked_leaves(leaf_hashes: Sequence[bytes]) -> Sequence[bytes]:
    for i, h in enumerate(leaf_hashes):
        if not _is_hash(h):
            raise ValueError(f"leaf hash {i} must be {HASH_SIZE} bytes")
    return leaf_hashes


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves are ``leaf_hashes`` (outputs of :func:`leaf_hash`).

    This recomputes the whole tree (O(n)); a log should use :class:`CompactRange`
    or :func:`root_from_nodes` instead. Raises ``ValueError`` on a hash that is
    not 32 bytes.
    """
    leaves = _checked_leaves(leaf_hashes)
    return _mth(leaves, 0, len(leaves))


def _path(leaves: Sequence[bytes], m: int, lo: int, hi: int) -> list[bytes]:
    """RFC 6962 PATH(m, D[lo:hi]), m relative to lo."""
    n = hi - lo
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(leaves, m, lo, lo + k), _mth(leaves, lo + k, hi)]
    return [*_path(leaves, m - k, lo + k, hi), _mth(leaves, lo, lo + k)]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 audit path (PATH) for leaf ``index`` in the tree of ``leaf_hashes``.

    Reference implementation over the full leaf list; see
    :func:`inclusion_proof_from_nodes` for the O(log n) version. Raises
    ``ValueError`` unless ``0 <= index < len(leaf_hashes)``.
    """
    leaves = _checked_leaves(leaf_hashes)
    index = _require_count(index, "index")
    if index >= len(leaves):
        raise ValueError(f"index {index} is outside a tree of size {len(leaves)}")
    return _path(leaves, index, 0, len(leaves))


def _subproof(leaves: Sequence[bytes], m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
    """RFC 6962 SUBPROOF(m, D[lo:hi], b), m relative to lo."""
    n = hi - lo
    if m == n:
        return [] if complete else [_mth(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaves, m, lo, lo + k, complete), _mth(leaves, lo + k, hi)]
    return [*_subproof(leaves, m - k, lo + k, hi, False), _mth(leaves, lo, lo + k)]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 6962 consistency proof (PROOF) from the first ``old_size`` leaves to all of them.

    The proof is empty when ``old_size`` is 0 or equals the tree size. Reference
    implementation over the full leaf list; see
    :func:`consistency_proof_from_nodes` for the O(log n) version. Raises
    ``ValueError`` unless ``0 <= old_size <= len(leaf_hashes)``.
    """
    leaves = _checked_leaves(leaf_hashes)
    old_size = _require_count(old_size, "old_size")
    if old_size > len(leaves):
        raise ValueError(f"old size {old_size} exceeds the tree size {len(leaves)}")
    if old_size in (0, len(leaves)):
        return []
    return _subproof(leaves, old_size, 0, len(leaves), True)


# --------------------------------------------------------------------------
# Node based computations (O(log n) node reads)
# --------------------------------------------------------------------------


def subtree_nodes(lo: int, hi: int) -> list[NodeId]:
    """The complete nodes, left to right, whose leaves together are ``[lo, hi)``.

    ``[lo, hi)`` must be a range that occurs as a subtree in RFC 6962 trees:
    ``lo`` a multiple of the largest power of two not above ``hi - lo``
    (every range a root or proof of a log starting at leaf 0 uses is one).
    The nodes follow the binary digits of ``hi - lo``, largest first.
    Raises ``ValueError`` on any other range.
    """
    lo = _require_count(lo, "lo")
    hi = _require_count(hi, "hi")
    if hi < lo:
        raise ValueError(f"empty range [{lo}, {hi}) is reversed")
    size = hi - lo
    nodes: list[NodeId] = []
    if size == 0:
        return nodes
    top = size.bit_length() - 1
    if lo & ((1 << top) - 1):
        raise ValueError(f"[{lo}, {hi}) is not an RFC 6962 subtree: {lo} is not a multiple of {1 << top}")
    pos = lo
    for level in range(top, -1, -1):
        if size >> level & 1:
            nodes.append((level, pos >> level))
            pos += 1 << level
    return nodes


def _read(get_node: NodeGetter, level: int, index: int) -> bytes:
    value = get_node(level, index)
    if not _is_hash(value):
        raise ValueError(f"stored node ({level}, {index}) is not a {HASH_SIZE}-byte hash")
    return bytes(value)


def _fold(get_node: NodeGetter, nodes: Sequence[NodeId]) -> bytes:
    """Hash complete nodes (left to right) into the RFC 6962 subtree they form."""
    if not nodes:
        return EMPTY_ROOT
    h = _read(get_node, *nodes[-1])
    for level, index in reversed(nodes[:-1]):
        h = node_hash(_read(get_node, level, index), h)
    return h


def subtree_hash(lo: int, hi: int, get_node: NodeGetter) -> bytes:
    """RFC 6962 hash MTH(D[lo:hi]) of a subtree, from at most log2(hi - lo) + 1 node reads.

    ``[lo, hi)`` must satisfy the alignment described in :func:`subtree_nodes`;
    the empty range hashes to :data:`EMPTY_ROOT`.
    """
    return _fold(get_node, subtree_nodes(lo, hi))


def nodes_needed_for_root(tree_size: int) -> list[NodeId]:
    """The stored nodes :func:`root_from_nodes` reads for ``tree_size`` (its right frontier)."""
    return subtree_nodes(0, _require_count(tree_size, "tree_size"))


def root_from_nodes(tree_size: int, get_node: NodeGetter) -> bytes:
    """Root hash of the first ``tree_size`` leaves, from at most log2(n) + 1 stored nodes."""
    return subtree_hash(0, tree_size, get_node)


def _inclusion_ranges(index: int, tree_size: int) -> list[_Range]:
    """Leaf ranges of the PATH elements for ``index``, in proof order (bottom up)."""
    index = _require_count(index, "index")
    tree_size = _require_count(tree_size, "tree_size")
    if index >= tree_size:
        raise ValueError(f"index {index} is outside a tree of size {tree_size}")
    ranges: list[_Range] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[_Range]:
    """Leaf ranges of the PROOF elements from ``old_size`` to ``new_size``, in proof order."""
    old_size = _require_count(old_size, "old_size")
    new_size = _require_count(new_size, "new_size")
    if old_size > new_size:
        raise ValueError(f"old size {old_size} exceeds the new size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[_Range] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        mid = lo + _split(hi - lo)
        if m <= mid - lo:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            m -= mid - lo
            lo = mid
            complete = False
    if not complete:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _nodes_for(ranges: Iterable[_Range]) -> list[NodeId]:
    nodes: list[NodeId] = []
    for lo, hi in ranges:
        nodes.extend(subtree_nodes(lo, hi))
    return nodes


def nodes_needed_for_inclusion(index: int, tree_size: int) -> list[NodeId]:
    """The stored nodes :func:`inclusion_proof_from_nodes` reads (O(log n), no duplicates)."""
    return _nodes_for(_inclusion_ranges(index, tree_size))


def nodes_needed_for_consistency(old_size: int, new_size: int) -> list[NodeId]:
    """The stored nodes :func:`consistency_proof_from_nodes` reads (O(log n), no duplicates)."""
    return _nodes_for(_consistency_ranges(old_size, new_size))


def inclusion_proof_from_nodes(index: int, tree_size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 6962 audit path for leaf ``index`` in the tree of size ``tree_size``.

    Reads only the nodes listed by :func:`nodes_needed_for_inclusion`. Raises
    ``ValueError`` unless ``0 <= index < tree_size``.
    """
    return [subtree_hash(lo, hi, get_node) for lo, hi in _inclusion_ranges(index, tree_size)]


def consistency_proof_from_nodes(old_size: int, new_size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 6962 consistency proof from tree size ``old_size`` to ``new_size``.

    Reads only the nodes listed by :func:`nodes_needed_for_consistency`. The
    proof is empty when ``old_size`` is 0 or equal to ``new_size``. Raises
    ``ValueError`` unless ``0 <= old_size <= new_size``.
    """
    return [subtree_hash(lo, hi, get_node) for lo, hi in _consistency_ranges(old_size, new_size)]


class CompactRange:
    """The right frontier of an append-only Merkle tree: enough to append and to get the root.

    For a tree of ``n`` leaves the frontier is the list of complete subtrees
    covering ``[0, n)``, left to right, one per set bit of ``n`` (so at most
    log2(n) + 1 hashes). :meth:`append` costs O(1) amortised node hashes and
    reports every node it completes, so a store can persist them and later
    serve roots and proofs with the ``*_from_nodes`` functions.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self) -> None:
        """Start an empty tree (size 0, root :data:`EMPTY_ROOT`)."""
        self._size = 0
        self._frontier: list[tuple[int, bytes]] = []

    @classmethod
    def from_nodes(cls, size: int, get_node: NodeGetter) -> CompactRange:
        """Rebuild the frontier of a stored tree of ``size`` leaves.

        Reads exactly the nodes :func:`nodes_needed_for_root` lists for ``size``.
        """
        rng = cls()
        rng._size = _require_count(size, "size")
        rng._frontier = [(level, _read(get_node, level, index)) for level, index in nodes_needed_for_root(size)]
        return rng

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild from the frontier hashes (left to right) of a tree of ``size`` leaves.

        ``hashes`` must hold one hash per node of :func:`nodes_needed_for_root`.
        """
        ids = nodes_needed_for_root(size)
        if len(hashes) != len(ids):
            raise ValueError(f"a tree of size {size} has {len(ids)} frontier nodes, got {len(hashes)}")
        rng = cls()
        rng._size = size
        rng._frontier = [
            (level, _require_hash(h, f"frontier node ({level}, {index})"))
            for (level, index), h in zip(ids, hashes, strict=True)
        ]
        return rng

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> list[tuple[int, int, bytes]]:
        """The frontier nodes as ``(level, index, hash)``, left to right."""
        ids = nodes_needed_for_root(self._size)
        return [(level, index, h) for (level, index), (_, h) in zip(ids, self._frontier, strict=True)]

    def copy(self) -> CompactRange:
        """An independent copy (appending to one does not change the other)."""
        rng = CompactRange()
        rng._size = self._size
        rng._frontier = list(self._frontier)
        return rng

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return the nodes this append completes.

        The result is ``[(0, n, leaf_hash), (1, ..., ...), ...]`` where ``n`` is
        the previous size: the leaf itself and every parent it completes, lowest
        first. Persisting them all keeps a node store able to answer every
        ``*_from_nodes`` query for every size up to the new one.
        """
        h = _require_hash(leaf_hash, "leaf hash")
        index = self._size
        created = [(0, index, h)]
        frontier = self._frontier
        frontier.append((0, h))
        self._size = size = index + 1
        while len(frontier) >= 2 and frontier[-2][0] == frontier[-1][0]:
            level, right = frontier.pop()
            _, left = frontier.pop()
            level += 1
            parent = node_hash(left, right)
            frontier.append((level, parent))
            created.append((level, (size >> level) - 1, parent))
        return created

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append several leaf hashes; return all the nodes they complete, in order."""
        created: list[tuple[int, int, bytes]] = []
        for h in leaf_hashes:
            created.extend(self.append(h))
        return created

    def root(self) -> bytes:
        """Root hash of the tree so far (:data:`EMPTY_ROOT` when empty)."""
        if not self._frontier:
            return EMPTY_ROOT
        h = self._frontier[-1][1]
        for _, left in reversed(self._frontier[:-1]):
            h = node_hash(left, h)
        return h

    def __repr__(self) -> str:
        """Size and root, for debugging."""
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


# --------------------------------------------------------------------------
# Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2)
# --------------------------------------------------------------------------


def _proof_hashes(proof: object) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is not one."""
    if isinstance(proof, str | bytes | bytearray) or not isinstance(proof, Sequence):
        return None
    out: list[bytes] = []
    for element in proof:
        if not _is_hash(element):
            return None
        out.append(bytes(element))
    return out


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree with ``root``.

    RFC 9162 section 2.1.3.2. Returns ``False`` (never raises) on any malformed
    input: ``index >= tree_size``, a proof of the wrong length, hashes that are
    not 32 bytes, non-integer sizes.
    """
    path = _proof_hashes(proof)
    if (
        path is None
        or not _is_hash(leaf_hash)
        or not _is_hash(root)
        or not _is_size(index)
        or not _is_size(tree_size)
        or index >= tree_size
    ):
        return False
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == bytes(root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows that tree ``new_size`` extends tree ``old_size``.

    RFC 9162 section 2.1.4.2. Equal sizes need an empty proof and equal roots;
    ``old_size`` 0 needs an empty proof and ``old_root`` equal to
    :data:`EMPTY_ROOT` (the only root a tree of size 0 has). Returns ``False``
    (never raises) on any malformed input.
    """
    path = _proof_hashes(proof)
    if (
        path is None
        or not _is_hash(old_root)
        or not _is_hash(new_root)
        or not _is_size(old_size)
        or not _is_size(new_size)
        or old_size > new_size
    ):
        return False
    first, second = bytes(old_root), bytes(new_root)
    if old_size == 0:
        return not path and first == EMPTY_ROOT and (new_size > 0 or second == first)
    if old_size == new_size:
        return not path and first == second
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path.insert(0, first)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first and sr == second
