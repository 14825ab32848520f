"""Benchmark of the node-based Merkle log in domain/integrity/merkle.py.

Appends 10^6 leaves to a CompactRange whose completed nodes go into an
in-memory node store (a dict ``(level, index) -> hash``, standing in for the
database table), and at 10^3, 10^4, 10^5 and 10^6 leaves reports the cost per
operation in microseconds of:

* append: leaf hash + CompactRange.append + storing the new nodes, averaged
  over the last 1,000 appends before that size;
* inclusion / consistency proof generation from stored nodes;
* inclusion / consistency proof verification;

plus how many stored nodes each proof reads, and, for contrast, the time to
recompute the root from every leaf (what the log must never do per append).
The per-operation costs stay flat or grow with log2(n); the full recompute
grows linearly.

Run from the repository root: ``python bench/merkle.py``.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.integrity.merkle import (
    CompactRange,
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
    leaf_hash,
    nodes_needed_for_consistency,
    nodes_needed_for_inclusion,
    root_from_nodes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

SIZES = (10**3, 10**4, 10**5, 10**6)
APPEND_WINDOW = 1_000
PROOF_SAMPLES = 2_000


def _us(seconds: float, count: int) -> float:
    return seconds / count * 1e6


def main() -> None:
    """Build the log up to 10^6 leaves and print the cost table."""
    store: dict[tuple[int, int], bytes] = {}

    def get_node(level: int, index: int) -> bytes:
        return store[(level, index)]

    log = CompactRange()

    def append(i: int) -> None:
        for level, index, value in log.append(leaf_hash(i.to_bytes(8, "big"))):
            store[(level, index)] = value

    rand = random.Random(6962)
    header = (
        f"{'leaves':>9} | {'append':>7} | {'incl proof':>10} | {'cons proof':>10} | "
        f"{'verify incl':>11} | {'verify cons':>11} | {'nodes/incl':>10} | "
        f"{'nodes/cons':>10} | {'full recompute':>14}"
    )
    units = (
        f"{'':>9} | {'µs':>7} | {'µs':>10} | {'µs':>10} | {'µs':>11} | {'µs':>11} | "
        f"{'(avg)':>10} | {'(avg)':>10} | {'ms (O(n))':>14}"
    )
    print("Merkle log benchmark: domain/integrity/merkle.py, CompactRange + in-memory node store")
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"append averaged over the last {APPEND_WINDOW:,} appends, "
        f"proofs over {PROOF_SAMPLES:,} random samples"
    )
    print()
    print(header)
    print(units)
    print("-" * len(header))
    started = time.perf_counter()
    for size in SIZES:
        while log.size < size - APPEND_WINDOW:
            append(log.size)
        t0 = time.perf_counter()
        while log.size < size:
            append(log.size)
        append_us = _us(time.perf_counter() - t0, APPEND_WINDOW)

        root = root_from_nodes(size, get_node)
        assert root == log.root()

        indices = [rand.randrange(size) for _ in range(PROOF_SAMPLES)]
        t0 = time.perf_counter()
        inclusion = [inclusion_proof_from_nodes(i, size, get_node) for i in indices]
        incl_us = _us(time.perf_counter() - t0, PROOF_SAMPLES)

        olds = [rand.randrange(1, size) for _ in range(PROOF_SAMPLES)]
        t0 = time.perf_counter()
        consistency = [consistency_proof_from_nodes(m, size, get_node) for m in olds]
        cons_us = _us(time.perf_counter() - t0, PROOF_SAMPLES)

        leaves = [store[(0, i)] for i in indices]
        t0 = time.perf_counter()
        ok = all(
            verify_inclusion(leaf, i, size, proof, root)
            for leaf, i, proof in zip(leaves, indices, inclusion, strict=True)
        )
        verify_incl_us = _us(time.perf_counter() - t0, PROOF_SAMPLES)
        assert ok

        old_roots = [root_from_nodes(m, get_node) for m in olds]
        t0 = time.perf_counter()
        ok = all(
            verify_consistency(m, size, old_root, root, proof)
            for m, old_root, proof in zip(olds, old_roots, consistency, strict=True)
        )
        verify_cons_us = _us(time.perf_counter() - t0, PROOF_SAMPLES)
        assert ok

        incl_nodes = sum(len(nodes_needed_for_inclusion(i, size)) for i in indices)
        cons_nodes = sum(len(nodes_needed_for_consistency(m, size)) for m in olds)

        all_leaves = [store[(0, i)] for i in range(size)]
        t0 = time.perf_counter()
        assert root_hash(all_leaves) == root
        recompute_ms = (time.perf_counter() - t0) * 1e3

        print(
            f"{size:>9,} | {append_us:>7.2f} | {incl_us:>10.2f} | {cons_us:>10.2f} | "
            f"{verify_incl_us:>11.2f} | {verify_cons_us:>11.2f} | "
            f"{incl_nodes / PROOF_SAMPLES:>10.1f} | {cons_nodes / PROOF_SAMPLES:>10.1f} | "
            f"{recompute_ms:>14.1f}",
            flush=True,
        )
    print()
    print(f"{len(store):,} stored nodes for {log.size:,} leaves; total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
