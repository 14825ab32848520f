"""The proofs an export ships: one RFC 9162 multi-leaf inclusion proof for all of
its events, and consistency proofs from every bundled checkpoint to the latest.

A hundred thousand separate audit paths would repeat the same upper nodes a
hundred thousand times (about 18 hashes each, some 100 MB of hex). The bundle
instead ships, once, the complete-subtree hashes ``(level, index, hash)`` that
cover the leaves which are *not* events of the bundle; the bundle's own events
supply every other leaf. Every event's standard audit path is made of these
(``verify_bundle.py --audit-path`` prints one), and recomputing the root once
checks all of them together.
"""

from __future__ import annotations

import bisect
from typing import Any

from sqlalchemy.engine import Connection

from domain.integrity import merkle
from projections import transparency_log as tlog
from service.exports.verify_bundle import CONSISTENCY_FORMAT, INCLUSION_FORMAT, checkpoint_name


def covering_nodes(leaves: list[int], size: int) -> list[tuple[int, int]]:
    """The complete nodes that, with the leaves in ``leaves`` (sorted), determine the root of ``size`` leaves.

    Walks the RFC 9162 tree from the root: a subtree without any of ``leaves``
    is given by its complete nodes; a subtree holding some is split in two.
    """
    nodes: list[tuple[int, int]] = []
    pending = [(0, size)] if size else []
    while pending:
        lo, hi = pending.pop()
        first = bisect.bisect_left(leaves, lo)
        if first == len(leaves) or leaves[first] >= hi:
            nodes.extend(merkle.subtree_nodes(lo, hi))
        elif hi - lo > 1:
            mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
            pending.append((mid, hi))
            pending.append((lo, mid))
    return sorted(nodes)


def inclusion_document(conn: Connection, leaves_and_positions: list[tuple[int, int]], size: int) -> dict[str, Any]:
    """``proofs/inclusion.json``: the multi-leaf proof of the events at these (leaf, position) pairs."""
    leaves = sorted(leaf for leaf, _ in leaves_and_positions)
    needed = covering_nodes(leaves, size)
    found = tlog.fetch_nodes(conn, needed)
    return {
        "format": INCLUSION_FORMAT,
        "hashing": "RFC 9162 with SHA-256: leaf = sha256(0x00 || event hash), node = sha256(0x01 || left || right)",
        "tree_size": size,
        "root_hash": tlog.root_at(conn, size).hex(),
        "checkpoint": checkpoint_name(size),
        "leaves": [[leaf, position] for leaf, position in leaves_and_positions],
        "nodes": [[level, index, found[(level, index)].hex()] for level, index in needed],
    }


def consistency_document(conn: Connection, sizes: list[int], latest: int) -> dict[str, Any]:
    """``proofs/consistency.json``: RFC 9162 consistency proofs from each of ``sizes`` to ``latest``."""
    return {
        "format": CONSISTENCY_FORMAT,
        "to_size": latest,
        "to_checkpoint": checkpoint_name(latest),
        "proofs": [
            {
                "from_size": size,
                "from_checkpoint": checkpoint_name(size),
                "proof": [h.hex() for h in tlog.consistency_proof(conn, size, latest)],
            }
            for size in sorted(sizes)
            if size < latest
        ],
    }
