"""The proofs an export ships: one RFC 9162 multi-leaf inclusion proof for all of
its events, and consistency proofs from every bundled checkpoint to the latest.

A hundred thousand separate audit paths would repeat the same upper nodes a
hundred thousand times (about 18 hashes each, some 100 MB of hex). The bundle
instead ships, once, the complete-subtree hashes ``(level, index, hash)`` that
cover the leaves which are *not* events of the bundle; the bundle's own events
supply every other leaf. Every event's standard audit path is made of these
(``verify_bundle.py --audit-path`` prints one), and recomputing the root once
checks all of them together. The entries go out as lines in leaf order (the
events and the nodes between them), so neither side holds them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.engine import Connection

from projections import transparency_log as tlog
from service.exports.verify_bundle import CONSISTENCY_FORMAT, INCLUSION_FORMAT, INCLUSION_LINES, checkpoint_name

BATCH = 5_000
"""Proof entries whose node hashes are read in one go."""


def gap_nodes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The largest complete subtrees (level, index) that together are exactly leaves [lo, hi), left to right."""
    nodes: list[tuple[int, int]] = []
    while lo < hi:
        level = min((lo & -lo).bit_length() - 1 if lo else 63, (hi - lo).bit_length() - 1)
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def inclusion_header(conn: Connection, size: int) -> dict[str, Any]:
    """``proofs/inclusion.json``: what the entries of ``proofs/inclusion.jsonl`` prove, and against which root."""
    return {
        "format": INCLUSION_FORMAT,
        "hashing": "RFC 9162 with SHA-256: leaf = sha256(0x00 || event hash), node = sha256(0x01 || left || right)",
        "tree_size": size,
        "root_hash": tlog.root_at(conn, size).hex(),
        "checkpoint": checkpoint_name(size),
        "entries": INCLUSION_LINES,
        "layout": "one JSON array a line, in leaf order: [leaf index, ledger position] for each event of the "
        "bundle, [level, index, hash] for each complete subtree that covers leaves the bundle has no event for",
    }


def inclusion_lines(conn: Connection, leaves_and_positions: Iterable[tuple[int, int]], size: int) -> Iterator[bytes]:
    """``proofs/inclusion.jsonl``, line by line (newline included), for the events at these (leaf, position)
    pairs in leaf order: between consecutive events, the subtrees covering the leaves between them. Node
    hashes are read a batch at a time, so nothing here grows with the number of events."""
    pending: list[tuple[int, int, int]] = []

    def flush() -> Iterator[bytes]:
        found = tlog.fetch_nodes(conn, [(a, b) for kind, a, b in pending if kind >= 0])
        for kind, a, b in pending:
            yield (f'[{a},{b},"{found[(a, b)].hex()}"]\n' if kind >= 0 else f"[{a},{b}]\n").encode("ascii")
        pending.clear()

    after = 0
    for leaf, position in leaves_and_positions:
        pending += [(0, level, index) for level, index in gap_nodes(after, leaf)]
        pending.append((-1, leaf, position))
        after = leaf + 1
        if len(pending) >= BATCH:
            yield from flush()
    pending += [(0, level, index) for level, index in gap_nodes(after, size)]
    yield from flush()


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
