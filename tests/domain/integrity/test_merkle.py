"""Tests of domain.integrity.merkle: RFC 6962 reference vectors, proofs, verifiers and compact ranges.

The reference tree, roots and proofs (:mod:`support.merkle_vectors`) are the
published certificate-transparency vectors; the node ids of proofs are from
transparency-dev/merkle's proof/proof_test.go.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.merkle_vectors import CONSISTENCY_VECTORS, INCLUSION_VECTORS, REFERENCE_LEAVES, ROOTS

from domain.integrity.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeId,
    consistency_proof,
    consistency_proof_from_nodes,
    inclusion_proof,
    inclusion_proof_from_nodes,
    leaf_hash,
    node_hash,
    nodes_needed_for_consistency,
    nodes_needed_for_inclusion,
    nodes_needed_for_root,
    root_from_nodes,
    root_hash,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

# --------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------

LEAF_HASHES = [leaf_hash(d) for d in REFERENCE_LEAVES]

# Node ids ((level, index)) each proof reads, from transparency-dev/merkle
# proof/proof_test.go (there listed with rehash markers; here as sets).
INCLUSION_NODE_IDS = [
    (0, 2, {(0, 1)}),
    (1, 2, {(0, 0)}),
    (1, 3, {(0, 0), (0, 2)}),
    (0, 7, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    (2, 7, {(0, 3), (1, 0), (0, 6), (1, 2)}),
    (4, 7, {(0, 5), (0, 6), (2, 0)}),
    (6, 7, {(1, 2), (2, 0)}),
    (2, 4, {(0, 3), (1, 0)}),
    (3, 5, {(0, 2), (1, 0), (0, 4)}),
    (3, 6, {(0, 2), (1, 0), (1, 2)}),
    (10, 15, {(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)}),
    (24, 31, {(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)}),
    (81, 95, {(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)}),
]
CONSISTENCY_NODE_IDS = [
    (1, 2, {(0, 1)}),
    (1, 4, {(0, 1), (1, 1)}),
    (1, 6, {(0, 1), (1, 1), (1, 2)}),
    (2, 3, {(0, 2)}),
    (2, 8, {(1, 1), (2, 1)}),
    (3, 7, {(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)}),
    (4, 7, {(0, 6), (1, 2)}),
    (5, 7, {(0, 4), (0, 5), (0, 6), (2, 0)}),
    (6, 7, {(1, 2), (0, 6), (2, 0)}),
    (7, 8, {(0, 6), (0, 7), (1, 2), (2, 0)}),
    (2, 4, {(1, 1)}),
    (3, 5, {(0, 2), (0, 3), (1, 0), (0, 4)}),
    (3, 6, {(0, 2), (0, 3), (1, 0), (1, 2)}),
    (4, 6, {(1, 2)}),
    (1, 7, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    (10, 15, {(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)}),
    (24, 31, {(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)}),
    (81, 95, {(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)}),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

Store = dict[NodeId, bytes]


def _store_of(leaves: list[bytes]) -> Store:
    store: Store = {}
    rng = CompactRange()
    for h in leaves:
        for level, index, value in rng.append(h):
            store[(level, index)] = value
    return store


def _getter(store: Store) -> Callable[[int, int], bytes]:
    return lambda level, index: store[(level, index)]


@lru_cache(maxsize=64)
def _tree(size: int) -> tuple[list[bytes], Store]:
    """Leaf hashes of a synthetic tree of ``size`` leaves, and all its stored nodes."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    return leaves, _store_of(leaves)


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


EDGE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129]
EDGE_SIZES += [255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 1999, 2000]
tree_sizes = st.one_of(st.integers(min_value=1, max_value=2000), st.sampled_from(EDGE_SIZES))
bits = st.integers(min_value=0, max_value=255)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(tree_sizes)
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def old_and_new_size(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(tree_sizes)
    old = draw(st.one_of(st.integers(min_value=1, max_value=new), st.sampled_from([1, new])))
    return old, new


PROPERTY = settings(max_examples=60, deadline=None)

# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------


def test_empty_root_is_sha256_of_the_empty_string() -> None:
    assert ROOTS[0] == EMPTY_ROOT


def test_leaf_hash_prefixes_a_zero_byte() -> None:
    assert leaf_hash(b"") == ROOTS[1]


def test_node_hash_prefixes_a_one_byte() -> None:
    assert node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[2]


@pytest.mark.parametrize("size", range(9))
def test_root_hash_matches_the_reference_root(size: int) -> None:
    assert root_hash(LEAF_HASHES[:size]) == ROOTS[size]


def test_root_hash_rejects_a_leaf_hash_that_is_not_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        root_hash([LEAF_HASHES[0], b"short"])


# --------------------------------------------------------------------------
# Reference proofs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_proof_matches_the_reference_path(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(LEAF_HASHES[:size], index) == proof


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_reference_inclusion_proof_verifies(index: int, size: int, proof: list[bytes]) -> None:
    assert verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_proof_matches_the_reference_proof(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(LEAF_HASHES[:new], old) == proof


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_reference_consistency_proof_verifies(old: int, new: int, proof: list[bytes]) -> None:
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_proof_from_nodes_matches_the_reference_path(index: int, size: int, proof: list[bytes]) -> None:
    store = _store_of(LEAF_HASHES)
    assert inclusion_proof_from_nodes(index, size, _getter(store)) == proof


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_proof_from_nodes_matches_the_reference_proof(old: int, new: int, proof: list[bytes]) -> None:
    store = _store_of(LEAF_HASHES)
    assert consistency_proof_from_nodes(old, new, _getter(store)) == proof


@pytest.mark.parametrize("size", range(9))
def test_root_from_nodes_matches_the_reference_root(size: int) -> None:
    store = _store_of(LEAF_HASHES)
    assert root_from_nodes(size, _getter(store)) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "ids"), INCLUSION_NODE_IDS)
def test_inclusion_reads_the_same_nodes_as_transparency_dev(index: int, size: int, ids: set[NodeId]) -> None:
    assert set(nodes_needed_for_inclusion(index, size)) == ids


@pytest.mark.parametrize(("old", "new", "ids"), CONSISTENCY_NODE_IDS)
def test_consistency_reads_the_same_nodes_as_transparency_dev(old: int, new: int, ids: set[NodeId]) -> None:
    assert set(nodes_needed_for_consistency(old, new)) == ids


def _corrupted_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """The probes of transparency-dev's corruptInclusionProof: none may verify."""
    probes = [
        ("index - 1", (leaf, index - 1, size, proof, root)),
        ("index + 1", (leaf, index + 1, size, proof, root)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, root)),
        ("size * 2", (leaf, index, size * 2, proof, root)),
        ("size // 2", (leaf, index, size // 2, proof, root)),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, root)),
        ("empty root", (leaf, index, size, proof, EMPTY_ROOT)),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*proof, b""], root)),
        ("trailing root", (leaf, index, size, [*proof, root], root)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], root)),
        ("preceding root", (leaf, index, size, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 3)
        probes.append((f"proof[{i}] bit 3", (leaf, index, size, wrong, root)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], root)))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted component", (leaf, index, size, inserted, root)))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_corrupted_reference_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    probes = _corrupted_inclusion(index, size, proof, ROOTS[size], LEAF_HASHES[index])
    accepted = [name for name, args in probes if verify_inclusion(*args)]
    assert accepted == []


def _corrupted_consistency(
    old: int, new: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """The probes of transparency-dev's corruptConsistencyProof: none may verify."""
    probes = [
        ("old - 1", (old - 1, new, root1, root2, proof)),
        ("old + 1", (old + 1, new, root1, root2, proof)),
        ("old ^ 2", (old ^ 2, new, root1, root2, proof)),
        ("new * 2", (old, new * 2, root1, root2, proof)),
        ("new // 2", (old, new // 2, root1, root2, proof)),
        ("wrong root1", (old, new, b"WrongRoot", root2, proof)),
        ("wrong root2", (old, new, root1, b"WrongRoot", proof)),
        ("swapped roots", (old, new, root2, root1, proof)),
        ("empty proof", (old, new, root1, root2, [])),
        ("trailing garbage", (old, new, root1, root2, [*proof, b""])),
        ("trailing root1", (old, new, root1, root2, [*proof, root1])),
        ("trailing root2", (old, new, root1, root2, [*proof, root2])),
        ("preceding garbage", (old, new, root1, root2, [b"", *proof])),
        ("preceding root1", (old, new, root1, root2, [root1, *proof])),
        ("preceding root2", (old, new, root1, root2, [root2, *proof])),
        ("preceding proof[0]", (old, new, root1, root2, [proof[0], *proof])),
        ("truncated proof", (old, new, root1, root2, proof[:-1])),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 4)
        probes.append((f"proof[{i}] bit 4", (old, new, root1, root2, wrong)))
    return probes


@pytest.mark.parametrize(("old", "new", "proof"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_corrupted_reference_consistency_proofs_fail(old: int, new: int, proof: list[bytes]) -> None:
    probes = _corrupted_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    accepted = [name for name, args in probes if verify_consistency(*args)]
    assert accepted == []


# --------------------------------------------------------------------------
# Verifier edge cases
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "root1", "root2", "proof", "expected"),
    [
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 5, EMPTY_ROOT, ROOTS[5], [], True),
        (0, 5, ROOTS[1], ROOTS[5], [], False),
        (0, 0, EMPTY_ROOT, ROOTS[1], [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT], False),
        (1, 1, ROOTS[1], ROOTS[1], [], True),
        (1, 1, ROOTS[1], ROOTS[2], [], False),
        (1, 1, ROOTS[1], ROOTS[1], [ROOTS[1]], False),
        (1, 0, ROOTS[1], EMPTY_ROOT, [], False),
        (2, 1, ROOTS[2], ROOTS[1], [], False),
        (1, 2, ROOTS[1], ROOTS[2], [], False),
    ],
)
def test_verify_consistency_trivial_cases(
    old: int, new: int, root1: bytes, root2: bytes, proof: list[bytes], expected: bool
) -> None:
    assert verify_consistency(old, new, root1, root2, proof) is expected


def test_single_leaf_tree_inclusion_needs_an_empty_proof_and_root_equal_to_leaf() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [h], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], h)


@pytest.mark.parametrize(
    "args",
    [
        (LEAF_HASHES[0], 8, 8, [], ROOTS[8]),  # index == size
        (LEAF_HASHES[0], 0, 0, [], EMPTY_ROOT),  # empty tree
        (LEAF_HASHES[0], -1, 8, [], ROOTS[8]),
        (LEAF_HASHES[0], True, 8, [], ROOTS[8]),
        (LEAF_HASHES[0], "0", 8, [], ROOTS[8]),
        (LEAF_HASHES[0], 0, 2**64, [], ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, "proof", ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, b"proof", ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, None, ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, [1, 2, 3], ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, INCLUSION_VECTORS[1][2], None),
        (None, 0, 8, INCLUSION_VECTORS[1][2], ROOTS[8]),
        (LEAF_HASHES[0], 0, 8, [h[:31] for h in INCLUSION_VECTORS[1][2]], ROOTS[8]),
    ],
)
def test_verify_inclusion_returns_false_on_malformed_input(args: tuple[object, ...]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        (-1, 8, ROOTS[0], ROOTS[8], []),
        (6, 8, ROOTS[6], ROOTS[8], "proof"),
        (6, 8, ROOTS[6], ROOTS[8], None),
        (6, 8, ROOTS[6], ROOTS[8], [None, None, None]),
        (6, 8, ROOTS[6][:31], ROOTS[8], CONSISTENCY_VECTORS[2][2]),
        (6, 8, ROOTS[6], None, CONSISTENCY_VECTORS[2][2]),
        (6.0, 8, ROOTS[6], ROOTS[8], CONSISTENCY_VECTORS[2][2]),
        (6, 2**64, ROOTS[6], ROOTS[8], CONSISTENCY_VECTORS[2][2]),
        (True, 8, ROOTS[1], ROOTS[8], CONSISTENCY_VECTORS[1][2]),
    ],
)
def test_verify_consistency_returns_false_on_malformed_input(args: tuple[object, ...]) -> None:
    assert verify_consistency(*args) is False  # type: ignore[arg-type]


def test_inclusion_proof_rejects_an_index_outside_the_tree() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAF_HASHES, 8)


def test_consistency_proof_rejects_an_old_size_beyond_the_tree() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        consistency_proof(LEAF_HASHES, 9)


def test_consistency_proof_is_empty_from_size_zero_and_to_the_same_size() -> None:
    store = _store_of(LEAF_HASHES)
    assert consistency_proof(LEAF_HASHES, 0) == []
    assert consistency_proof(LEAF_HASHES, 8) == []
    assert consistency_proof_from_nodes(0, 8, _getter(store)) == []
    assert consistency_proof_from_nodes(8, 8, _getter(store)) == []


# --------------------------------------------------------------------------
# Node accessors
# --------------------------------------------------------------------------


def test_subtree_hash_of_an_empty_range_is_the_empty_root() -> None:
    assert subtree_hash(4, 4, _getter({})) == EMPTY_ROOT


def test_subtree_hash_rejects_a_range_that_is_not_an_rfc6962_subtree() -> None:
    with pytest.raises(ValueError, match="not an RFC 6962 subtree"):
        subtree_hash(1, 4, _getter(_store_of(LEAF_HASHES)))


def test_subtree_hash_equals_the_root_of_the_slice_it_covers() -> None:
    leaves, store = _tree(300)
    for lo, hi in [(0, 300), (256, 300), (256, 257), (128, 255), (288, 300), (64, 127)]:
        assert subtree_hash(lo, hi, _getter(store)) == root_hash(leaves[lo:hi])


def test_from_nodes_functions_read_exactly_the_listed_nodes() -> None:
    _, store = _tree(1000)
    cases: list[tuple[list[NodeId], Callable[[Callable[[int, int], bytes]], object]]] = [
        (nodes_needed_for_root(999), lambda g: root_from_nodes(999, g)),
        (nodes_needed_for_inclusion(517, 999), lambda g: inclusion_proof_from_nodes(517, 999, g)),
        (
            nodes_needed_for_consistency(333, 999),
            lambda g: consistency_proof_from_nodes(333, 999, g),
        ),
    ]
    for needed, compute in cases:
        reads: list[NodeId] = []

        def get(level: int, index: int, reads: list[NodeId] = reads) -> bytes:
            reads.append((level, index))
            return store[(level, index)]

        compute(get)
        assert sorted(reads) == sorted(needed)
        assert len(set(needed)) == len(needed)


def test_nodes_needed_grow_logarithmically_with_tree_size() -> None:
    size = 10**9 + 12345
    limit = 2 * size.bit_length()
    assert len(nodes_needed_for_root(size)) <= size.bit_length()
    assert len(nodes_needed_for_inclusion(size // 3, size)) <= limit
    assert len(nodes_needed_for_consistency(size // 3, size)) <= limit


def test_nodes_needed_for_root_has_one_node_per_set_bit_of_the_size() -> None:
    assert nodes_needed_for_root(13) == [(3, 0), (2, 2), (0, 12)]


def test_every_proof_of_every_tree_up_to_64_leaves_agrees_and_verifies() -> None:
    for size in range(1, 65):
        leaves, store = _tree(size)
        get = _getter(store)
        root = root_hash(leaves)
        assert root_from_nodes(size, get) == root
        for index in range(size):
            proof = inclusion_proof_from_nodes(index, size, get)
            assert proof == inclusion_proof(leaves, index)
            assert verify_inclusion(leaves[index], index, size, proof, root)
        for old in range(1, size + 1):
            proof = consistency_proof_from_nodes(old, size, get)
            assert proof == consistency_proof(leaves, old)
            assert verify_consistency(old, size, root_hash(leaves[:old]), root, proof)


# --------------------------------------------------------------------------
# Properties over random trees of up to 2,000 leaves
# --------------------------------------------------------------------------


@PROPERTY
@given(size_and_index())
def test_inclusion_proofs_of_random_trees_verify(case: tuple[int, int]) -> None:
    size, index = case
    leaves, store = _tree(size)
    proof = inclusion_proof_from_nodes(index, size, _getter(store))
    assert verify_inclusion(leaves[index], index, size, proof, root_hash(leaves))


@PROPERTY
@given(old_and_new_size())
def test_consistency_proofs_of_random_trees_verify(case: tuple[int, int]) -> None:
    old, new = case
    leaves, store = _tree(new)
    get = _getter(store)
    proof = consistency_proof_from_nodes(old, new, get)
    old_root, new_root = root_hash(leaves[:old]), root_hash(leaves)
    assert verify_consistency(old, new, old_root, new_root, proof)


@PROPERTY
@given(size_and_index(), st.data())
def test_node_based_functions_agree_with_list_based_ones(case: tuple[int, int], data: st.DataObject) -> None:
    size, index = case
    old = data.draw(st.integers(min_value=0, max_value=size), label="old size")
    leaves, store = _tree(size)
    get = _getter(store)
    assert root_from_nodes(size, get) == root_hash(leaves)
    assert root_from_nodes(old, get) == root_hash(leaves[:old])
    assert inclusion_proof_from_nodes(index, size, get) == inclusion_proof(leaves, index)
    assert consistency_proof_from_nodes(old, size, get) == consistency_proof(leaves, old)


@PROPERTY
@given(size_and_index(), bits)
def test_flipping_one_bit_of_an_inclusion_proof_or_root_fails(case: tuple[int, int], bit: int) -> None:
    size, index = case
    leaves, store = _tree(size)
    proof = inclusion_proof_from_nodes(index, size, _getter(store))
    root = root_from_nodes(size, _getter(store))
    leaf = leaves[index]
    assert not verify_inclusion(leaf, index, size, proof, _flip(root, bit))
    assert not verify_inclusion(_flip(leaf, bit), index, size, proof, root)
    for i in range(len(proof)):
        wrong = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
        assert not verify_inclusion(leaf, index, size, wrong, root)


@PROPERTY
@given(old_and_new_size(), bits)
def test_flipping_one_bit_of_a_consistency_proof_or_root_fails(case: tuple[int, int], bit: int) -> None:
    old, new = case
    _, store = _tree(new)
    get = _getter(store)
    proof = consistency_proof_from_nodes(old, new, get)
    old_root, new_root = root_from_nodes(old, get), root_from_nodes(new, get)
    assert not verify_consistency(old, new, _flip(old_root, bit), new_root, proof)
    assert not verify_consistency(old, new, old_root, _flip(new_root, bit), proof)
    for i in range(len(proof)):
        wrong = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
        assert not verify_consistency(old, new, old_root, new_root, wrong)


# --------------------------------------------------------------------------
# CompactRange
# --------------------------------------------------------------------------


def test_empty_compact_range_has_the_empty_root() -> None:
    rng = CompactRange()
    assert (rng.size, rng.root()) == (0, EMPTY_ROOT)


def test_compact_range_reproduces_the_reference_roots() -> None:
    rng = CompactRange()
    roots = [rng.root()]
    for h in LEAF_HASHES:
        rng.append(h)
        roots.append(rng.root())
    assert roots == ROOTS


def test_compact_range_root_equals_root_hash_at_every_size() -> None:
    leaves, _ = _tree(300)
    rng = CompactRange()
    for size, h in enumerate(leaves, start=1):
        rng.append(h)
        assert rng.size == size
        assert rng.root() == root_hash(leaves[:size])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=100))
def test_compact_range_root_equals_root_hash_for_arbitrary_entries(entries: list[bytes]) -> None:
    leaves = [leaf_hash(e) for e in entries]
    rng = CompactRange()
    rng.extend(leaves)
    assert rng.root() == root_hash(leaves)


def test_compact_range_rebuilt_from_stored_nodes_has_the_same_root() -> None:
    leaves, store = _tree(300)
    for size in range(301):
        rebuilt = CompactRange.from_nodes(size, _getter(store))
        assert rebuilt.size == size
        assert rebuilt.root() == root_hash(leaves[:size])


def test_compact_range_rebuilt_from_stored_nodes_appends_like_the_original() -> None:
    leaves, store = _tree(200)
    original = CompactRange()
    original.extend(leaves[:77])
    rebuilt = CompactRange.from_nodes(77, _getter(store))
    for h in leaves[77:]:
        assert rebuilt.append(h) == original.append(h)
    assert rebuilt.root() == original.root()


def test_compact_range_rebuilt_from_its_frontier_has_the_same_root() -> None:
    rng = CompactRange()
    rng.extend(_tree(1000)[0][:999])
    frontier = rng.frontier
    rebuilt = CompactRange.from_frontier(999, [h for _, _, h in frontier])
    assert [(level, index) for level, index, _ in frontier] == nodes_needed_for_root(999)
    assert rebuilt.root() == rng.root()


def test_append_reports_each_complete_node_exactly_once() -> None:
    size = 300
    created: list[NodeId] = []
    rng = CompactRange()
    for h in _tree(size)[0]:
        created.extend((level, index) for level, index, _ in rng.append(h))
    expected = {
        (level, index)
        for level in range(size.bit_length())
        for index in range(size >> level)  # complete nodes: (index + 1) * 2**level <= size
    }
    assert len(created) == len(set(created))
    assert set(created) == expected


def test_append_reports_the_leaf_then_the_parents_it_completes() -> None:
    rng = CompactRange()
    rng.extend(LEAF_HASHES[:7])
    created = rng.append(LEAF_HASHES[7])
    h67 = node_hash(LEAF_HASHES[6], LEAF_HASHES[7])
    h47 = node_hash(node_hash(LEAF_HASHES[4], LEAF_HASHES[5]), h67)
    assert created == [(0, 7, LEAF_HASHES[7]), (1, 3, h67), (2, 1, h47), (3, 0, ROOTS[8])]


def test_compact_range_frontier_has_one_node_per_set_bit_of_the_size() -> None:
    rng = CompactRange()
    rng.extend(_tree(1000)[0][:1000])
    assert len(rng.frontier) == bin(1000).count("1")


def test_compact_range_copy_is_independent() -> None:
    rng = CompactRange()
    rng.extend(LEAF_HASHES[:5])
    clone = rng.copy()
    clone.append(LEAF_HASHES[5])
    assert (rng.size, rng.root()) == (5, ROOTS[5])
    assert (clone.size, clone.root()) == (6, ROOTS[6])


def test_compact_range_rejects_a_leaf_hash_that_is_not_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"not a hash")
