"""The standalone bundle verifier gives the same answers as the domain's Merkle and checkpoint code.

``service/exports/verify_bundle.py`` ships alone inside every export bundle, so it
re-implements RFC 6962/9162 hashing and proof checks and C2SP signed-note
checkpoints instead of importing ``domain.integrity``. This test holds the two
equal: on the RFC 6962 reference vectors and on random trees, proofs and notes,
valid and tampered, both must accept and refuse the same things and compute the
same hashes. Key windows likewise: both refuse the same positions, in the same words.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from support.merkle_vectors import CONSISTENCY_VECTORS, INCLUSION_VECTORS, REFERENCE_LEAVES, ROOTS

from domain.integrity import checkpoint as domain_checkpoint
from domain.integrity import cosignature as domain_cosignature
from domain.integrity import merkle as domain_merkle
from domain.integrity import witness_policy as domain_witness_policy
from domain.integrity.key_lifetimes import KeyWindow
from service.exports import verify_bundle as verifier

PROPERTY = settings(max_examples=40, deadline=None)

InclusionCase = tuple[bytes, int, int, list[bytes], bytes]
"""(leaf hash, index, tree size, audit path, root) as both ``verify_inclusion`` take them."""
ConsistencyCase = tuple[int, int, bytes, bytes, list[bytes]]
"""(old size, new size, old root, new root, proof) as both ``verify_consistency`` take them."""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _leaves(size: int, seed: int) -> tuple[bytes, ...]:
    """Leaf hashes of a synthetic tree (one per ``seed``) of ``size`` leaves."""
    return tuple(domain_merkle.leaf_hash(seed.to_bytes(4, "big") + i.to_bytes(4, "big")) for i in range(size))


def _verifier_nodes(leaves: tuple[bytes, ...] | list[bytes]) -> verifier.MerkleNodes:
    """The verifier's node store knowing every leaf (as a bundle holding every event would)."""
    return verifier.MerkleNodes({(0, i): leaf for i, leaf in enumerate(leaves)})


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _tampered_inclusions(case: InclusionCase, bit: int) -> list[InclusionCase]:
    leaf, index, size, path, root = case
    other = domain_merkle.leaf_hash(b"not in the tree")
    variants: list[InclusionCase] = [
        (_flip(leaf, bit), index, size, path, root),
        (leaf, index, size, path, _flip(root, bit)),
        (leaf, index + 1, size, path, root),
        (leaf, index - 1, size, path, root),
        (leaf, index, size + 1, path, root),
        (leaf, index, size - 1, path, root),
        (leaf, index, size, [*path, other], root),
        (leaf, index, size, [other, *path], root),
    ]
    for at in range(len(path)):
        variants.append((leaf, index, size, [*path[:at], _flip(path[at], bit), *path[at + 1 :]], root))
        variants.append((leaf, index, size, path[:at] + path[at + 1 :], root))
    return variants


def _tampered_consistencies(case: ConsistencyCase, bit: int) -> list[ConsistencyCase]:
    old, new, old_root, new_root, proof = case
    other = domain_merkle.leaf_hash(b"not in the tree")
    variants: list[ConsistencyCase] = [
        (old, new, _flip(old_root, bit), new_root, proof),
        (old, new, old_root, _flip(new_root, bit), proof),
        (old, new, new_root, old_root, proof),
        (old + 1, new, old_root, new_root, proof),
        (old, new + 1, old_root, new_root, proof),
        (old, new - 1, old_root, new_root, proof),
        (new, old, new_root, old_root, proof),
        (old, new, old_root, new_root, [*proof, other]),
        (old, new, old_root, new_root, [other, *proof]),
    ]
    if old > 1:  # from size 0 the two differ by design (see the last Merkle test)
        variants.append((old - 1, new, old_root, new_root, proof))
    for at in range(len(proof)):
        variants.append((old, new, old_root, new_root, [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]))
        variants.append((old, new, old_root, new_root, proof[:at] + proof[at + 1 :]))
    return variants


def _same_inclusion_verdicts(cases: list[InclusionCase]) -> None:
    for leaf, index, size, path, root in cases:
        expected = domain_merkle.verify_inclusion(leaf, index, size, path, root)
        assert verifier.verify_inclusion(leaf, index, size, path, root) is expected, (index, size, len(path))


def _same_consistency_verdicts(cases: list[ConsistencyCase]) -> None:
    for old, new, old_root, new_root, proof in cases:
        expected = domain_merkle.verify_consistency(old, new, old_root, new_root, proof)
        assert verifier.verify_consistency(old, new, old_root, new_root, proof) is expected, (old, new, len(proof))


@st.composite
def trees(draw: st.DrawFn, max_size: int = 600) -> tuple[int, int]:
    """(tree size, seed) of a synthetic tree."""
    size = draw(st.one_of(st.integers(1, max_size), st.sampled_from([1, 2, 3, 4, 7, 8, 9, 16, 17, 255, 256, 257])))
    return size, draw(st.integers(0, 2**16))


bits = st.integers(min_value=0, max_value=255)


# --------------------------------------------------------------------------
# Merkle: the RFC 6962 reference vectors
# --------------------------------------------------------------------------


@given(data=st.binary(max_size=64), other=st.binary(min_size=32, max_size=32))
@PROPERTY
def test_leaf_and_node_hashes_agree(data: bytes, other: bytes) -> None:
    assert verifier.leaf_hash(data) == domain_merkle.leaf_hash(data)
    assert verifier.node_hash(data, other) == domain_merkle.node_hash(data, other)


@pytest.mark.parametrize("size", range(1, len(REFERENCE_LEAVES) + 1))
def test_reference_roots_agree(size: int) -> None:
    leaves = [verifier.leaf_hash(d) for d in REFERENCE_LEAVES[:size]]

    assert _verifier_nodes(leaves).subtree(0, size) == domain_merkle.root_hash(leaves) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_reference_inclusion_proofs_agree(index: int, size: int, proof: list[bytes]) -> None:
    leaves = [domain_merkle.leaf_hash(d) for d in REFERENCE_LEAVES[:size]]

    assert _verifier_nodes(leaves).audit_path(index, size) == domain_merkle.inclusion_proof(leaves, index) == proof
    assert verifier.verify_inclusion(leaves[index], index, size, proof, ROOTS[size])
    _same_inclusion_verdicts(_tampered_inclusions((leaves[index], index, size, proof, ROOTS[size]), bit=0))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_reference_consistency_proofs_agree(old: int, new: int, proof: list[bytes]) -> None:
    assert verifier.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    _same_consistency_verdicts(_tampered_consistencies((old, new, ROOTS[old], ROOTS[new], proof), bit=7))


# --------------------------------------------------------------------------
# Merkle: random trees
# --------------------------------------------------------------------------


@given(tree=trees(), data=st.data())
@PROPERTY
def test_roots_and_audit_paths_of_random_trees_agree(tree: tuple[int, int], data: st.DataObject) -> None:
    size, seed = tree
    leaves = _leaves(size, seed)
    index = data.draw(st.integers(0, size - 1), label="index")
    nodes = _verifier_nodes(leaves)

    assert nodes.subtree(0, size) == domain_merkle.root_hash(leaves)
    assert nodes.audit_path(index, size) == domain_merkle.inclusion_proof(leaves, index)


@given(tree=trees(max_size=300), data=st.data())
@PROPERTY
def test_a_multiproof_of_some_leaves_yields_the_domains_root_and_paths(
    tree: tuple[int, int], data: st.DataObject
) -> None:
    """As in a bundle: some events' leaves, and complete-subtree nodes covering every other leaf."""
    size, seed = tree
    leaves = _leaves(size, seed)
    events = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=8), label="events"))
    known = {(0, i): leaves[i] for i in events}
    for lo, hi in zip([-1, *events], [*events, size], strict=True):
        start = lo + 1
        while start < hi:  # the largest aligned complete subtrees that fit in the gap
            level = min((start & -start).bit_length() - 1 if start else 63, (hi - start).bit_length() - 1)
            known[(level, start >> level)] = domain_merkle.root_hash(leaves[start : start + (1 << level)])
            start += 1 << level
    nodes = verifier.MerkleNodes(known)

    assert nodes.subtree(0, size) == domain_merkle.root_hash(leaves)
    for index in events:
        assert nodes.audit_path(index, size) == domain_merkle.inclusion_proof(leaves, index)


@given(tree=trees(), data=st.data(), bit=bits)
@PROPERTY
def test_valid_and_tampered_inclusion_proofs_get_the_same_verdict(
    tree: tuple[int, int], data: st.DataObject, bit: int
) -> None:
    size, seed = tree
    leaves = _leaves(size, seed)
    index = data.draw(st.integers(0, size - 1), label="index")
    case: InclusionCase = (
        leaves[index],
        index,
        size,
        domain_merkle.inclusion_proof(leaves, index),
        domain_merkle.root_hash(leaves),
    )

    assert verifier.verify_inclusion(*case)
    _same_inclusion_verdicts([case, *_tampered_inclusions(case, bit)])


@given(tree=trees(), data=st.data(), bit=bits)
@PROPERTY
def test_valid_and_tampered_consistency_proofs_get_the_same_verdict(
    tree: tuple[int, int], data: st.DataObject, bit: int
) -> None:
    new, seed = tree
    leaves = _leaves(new, seed)
    old = data.draw(st.one_of(st.integers(1, new), st.sampled_from([1, new])), label="old size")
    case: ConsistencyCase = (
        old,
        new,
        domain_merkle.root_hash(leaves[:old]),
        domain_merkle.root_hash(leaves),
        domain_merkle.consistency_proof(leaves, old),
    )

    assert verifier.verify_consistency(*case)
    _same_consistency_verdicts([case, *_tampered_consistencies(case, bit)])


def test_the_verifier_refuses_consistency_from_the_empty_tree_which_the_domain_accepts() -> None:
    """The one difference, by design: a bundle proves consistency between signed checkpoints, never from size 0."""
    root = domain_merkle.root_hash(list(_leaves(5, 0)))

    assert domain_merkle.verify_consistency(0, 5, domain_merkle.EMPTY_ROOT, root, [])
    assert not verifier.verify_consistency(0, 5, domain_merkle.EMPTY_ROOT, root, [])


# --------------------------------------------------------------------------
# Checkpoints (C2SP signed notes)
# --------------------------------------------------------------------------

_NAME_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters="+")
key_names = st.one_of(
    st.just("mlledger.local/ledger"),
    st.text(_NAME_CHARS, min_size=1, max_size=24).filter(lambda name: not any(c.isspace() for c in name)),
)
lines = st.text(st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\n"), min_size=1, max_size=30)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class _Notes:
    """The two archive calls the verifier's checkpoint check makes, over notes held in memory."""

    def __init__(self, notes: dict[str, bytes]) -> None:
        self.notes = notes

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self.notes if name.startswith(prefix))

    def read(self, name: str) -> bytes:
        return self.notes[name]


def _verifier_verdict(note: str, origin: str, raw: bytes) -> tuple[str, int, bytes] | None:
    """What the verifier's checkpoint check (step 6) makes of one note of log ``origin`` signed with ``raw``."""
    written_size = note.split("\n")[1] if note.count("\n") > 1 else "0"
    name = verifier.checkpoint_name(int(written_size)) if written_size.isdecimal() else "checkpoints/0.txt"
    check = verifier.Verification(_Notes({name: note.encode("utf-8")}), [], workers=1)
    try:
        roots = check._checkpoints({"origin": origin}, {verifier.key_id_of(raw): raw})
    except verifier.BundleProblem:
        return None
    [(size, root)] = roots.items()
    return origin, size, root


def _domain_verdict(note: str, origin: str, key: Ed25519PrivateKey) -> tuple[str, int, bytes] | None:
    try:
        checkpoint = domain_checkpoint.verify_checkpoint(note, origin, key.public_key())
    except domain_checkpoint.CheckpointError:
        return None
    return checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash


@st.composite
def signed_notes(draw: st.DrawFn) -> tuple[str, str, Ed25519PrivateKey]:
    """(note, origin, ledger key): a checkpoint signed by the ledger key, maybe cosigned by other keys."""
    origin = draw(key_names, label="origin")
    checkpoint = domain_checkpoint.Checkpoint(
        origin,
        draw(st.integers(0, 2**64 - 1), label="tree size"),
        draw(st.binary(min_size=32, max_size=32), label="root"),
        tuple(draw(st.lists(lines, max_size=3), label="extension lines")),
    )
    key = Ed25519PrivateKey.from_private_bytes(draw(st.binary(min_size=32, max_size=32), label="ledger key"))
    note = domain_checkpoint.sign_checkpoint(checkpoint, origin, key)
    for witness in draw(st.lists(key_names, max_size=2), label="cosigners"):
        note = domain_checkpoint.add_signature(note, witness, Ed25519PrivateKey.generate())
    return note, origin, key


def _signature_lines(note: str) -> tuple[str, list[str]]:
    split = note.rfind("\n\n")
    return note[: split + 2], note[split + 2 :].splitlines(keepends=True)


def _tampered_notes(note: str, origin: str, key: Ed25519PrivateKey, choice: int, bit: int) -> list[str]:
    """The note with one body character changed, its ledger signature flipped, dropped or renamed, or its
    layout broken (a cosigner may share the origin's name: the ledger's line is the one with its key hash)."""
    head, signatures = _signature_lines(note)
    body = head[:-1]
    at = choice % (len(body) - 1)  # any character of the body but its final newline
    replacement = "A" if body[at] != "A" else "B"
    key_hash = domain_checkpoint.note_key_hash(origin, _raw(key))
    parsed = [domain_checkpoint.parse_signed_note(head + line)[1][0] for line in signatures]
    ours = next(i for i, s in enumerate(parsed) if (s.key_name, s.key_hash) == (origin, key_hash))
    before, after = signatures[:ours], signatures[ours + 1 :]
    flipped = domain_checkpoint.NoteSignature(origin, key_hash, _flip(parsed[ours].signature, bit)).line()
    renamed = domain_checkpoint.NoteSignature(origin + "x", key_hash, parsed[ours].signature).line()
    return [
        body[:at] + replacement + body[at + 1 :] + "\n" + "".join(signatures),
        head + "".join([*before, flipped, *after]),
        head + "".join([*before, *after]),
        head + "".join([*before, renamed, *after]),
        note.rstrip("\n"),
        note.replace("\n\n", "\n", 1),
    ]


@given(note=signed_notes(), raw=st.binary(min_size=32, max_size=32))
@PROPERTY
def test_note_key_hashes_and_verifier_keys_agree(note: tuple[str, str, Ed25519PrivateKey], raw: bytes) -> None:
    _, origin, _ = note

    assert verifier.note_key_hash(origin, raw) == domain_checkpoint.note_key_hash(origin, raw)
    assert verifier.verifier_key(origin, raw) == domain_checkpoint.verifier_key(origin, raw)


@given(note=signed_notes())
@PROPERTY
def test_a_signed_checkpoint_parses_the_same(note: tuple[str, str, Ed25519PrivateKey]) -> None:
    text, _, _ = note
    checkpoint, signatures = domain_checkpoint.parse_checkpoint(text)

    origin, size, root, body, signature_lines = verifier._parse_checkpoint(text)

    assert (origin, size, root, body) == (
        checkpoint.origin,
        checkpoint.tree_size,
        checkpoint.root_hash,
        checkpoint.body(),
    )
    assert signature_lines == [(s.key_name, s.key_hash, s.signature) for s in signatures]


@given(note=signed_notes())
@PROPERTY
def test_a_signed_checkpoint_verifies_in_both(note: tuple[str, str, Ed25519PrivateKey]) -> None:
    text, origin, key = note

    verdict = _domain_verdict(text, origin, key)

    assert verdict is not None
    assert _verifier_verdict(text, origin, _raw(key)) == verdict


@given(note=signed_notes(), choice=st.integers(0, 10_000), bit=bits)
@PROPERTY
def test_a_tampered_checkpoint_is_refused_by_both(
    note: tuple[str, str, Ed25519PrivateKey], choice: int, bit: int
) -> None:
    text, origin, key = note

    for tampered in _tampered_notes(text, origin, key, choice, bit):
        assert _domain_verdict(tampered, origin, key) is None, tampered
        assert _verifier_verdict(tampered, origin, _raw(key)) is None, tampered


@given(note=signed_notes())
@PROPERTY
def test_a_checkpoint_checked_with_another_key_is_refused_by_both(note: tuple[str, str, Ed25519PrivateKey]) -> None:
    text, origin, _ = note
    stranger = Ed25519PrivateKey.generate()

    assert _domain_verdict(text, origin, stranger) is None
    assert _verifier_verdict(text, origin, _raw(stranger)) is None


def test_a_cosignature_line_is_skipped_by_both() -> None:
    """Lines of other signature types (a C2SP cosignature/v1 line is a 4-byte key ID, a timestamp and a
    signature: 76 bytes) are kept and ignored when the ledger's signature is checked, by both."""
    key = Ed25519PrivateKey.generate()
    checkpoint = domain_checkpoint.Checkpoint("mlledger.local/ledger", 3, bytes(32))
    note = domain_checkpoint.sign_checkpoint(checkpoint, checkpoint.origin, key)
    cosignature = domain_checkpoint.NoteSignature("witness.example", b"\x04\x03\x02\x01", bytes(72))

    cosigned = note + cosignature.line()

    assert _domain_verdict(cosigned, checkpoint.origin, key) == (checkpoint.origin, 3, bytes(32))
    assert _verifier_verdict(cosigned, checkpoint.origin, _raw(key)) == (checkpoint.origin, 3, bytes(32))


# --------------------------------------------------------------------------
# Key windows: the verifier refuses what domain.integrity.key_lifetimes refuses, in the same words
# --------------------------------------------------------------------------


@st.composite
def _windows(draw: st.DrawFn) -> tuple[int, int | None, int | None, int | None]:
    first = draw(st.integers(min_value=1, max_value=500))
    last = draw(st.one_of(st.none(), st.integers(min_value=first, max_value=1_000)))
    since = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=1_000)))
    return first, last, since, None if since is None else draw(st.integers(min_value=first, max_value=2_000))


@PROPERTY
@given(window=_windows(), positions=st.lists(st.integers(min_value=1, max_value=1_200), min_size=1, max_size=20))
def test_key_windows_refuse_the_same_positions_with_the_same_words(
    window: tuple[int, int | None, int | None, int | None], positions: list[int]
) -> None:
    first, last, since, revoked_at = window
    ours = KeyWindow("0123456789abcdef", first=first, last=last, compromised_since=since, revoked_at=revoked_at)

    for position in [*positions, first - 1, first, *(p for p in (last, since) if p is not None)]:
        assert verifier.window_refusal("0123456789abcdef", position, window) == ours.refusal(position)
    assert verifier.describe_window(window) == ours.describe()


# --------------------------------------------------------------------------
# Witnesses: tlog-policy and cosignature/v1, as domain.integrity.witness_policy and .cosignature read them
# --------------------------------------------------------------------------

_WITNESS_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 5)]
_WITNESS_VKEYS = [domain_cosignature.cosigner_vkey(f"w{i}.example", _raw(key)) for i, key in enumerate(_WITNESS_KEYS)]
_LOG_VKEY = domain_checkpoint.verifier_key(
    "mlledger.local/ledger", _raw(Ed25519PrivateKey.from_private_bytes(bytes(32)))
)
_policy_lines = st.one_of(
    st.builds(
        lambda n, i: f"witness {n} {_WITNESS_VKEYS[i]}", st.sampled_from(["a", "b", "c", "none"]), st.integers(0, 3)
    ),
    st.builds(
        lambda n, k, m: f"group {n} {k} {' '.join(m)}",
        st.sampled_from(["g", "h", "a"]),
        st.sampled_from(["all", "any", "1", "2", "3", "0", "01"]),
        st.lists(st.sampled_from(["a", "b", "c", "g", "none"]), min_size=0, max_size=3),
    ),
    st.builds(lambda n: f"quorum {n}", st.sampled_from(["a", "b", "g", "h", "none", "x"])),
    st.sampled_from(
        ["", "# comment", f"log {_LOG_VKEY}", f"log {_WITNESS_VKEYS[0]}", "witness a b+00000000+AAAA", "\tquorum\ta"]
    ),
)


def _domain_policy(text: str) -> tuple[dict[str, bytes], bool] | None:
    try:
        policy = domain_witness_policy.parse_policy(text)
    except domain_checkpoint.CheckpointError:
        return None
    keys = {n: w.cosigner.public_key.public_bytes_raw() for n, w in policy.witnesses.items()}
    return keys, policy.satisfied_by({"a", "b"})


def _verifier_policy(text: str) -> tuple[dict[str, bytes], bool] | None:
    try:
        policy = verifier.parse_witness_policy(text)
    except ValueError:
        return None
    return {n: raw for n, (_, raw) in policy.witnesses.items()}, policy.met({"a", "b"})


@PROPERTY
@given(policy_lines=st.lists(_policy_lines, max_size=7))
def test_witness_policies_parse_and_decide_the_same(policy_lines: list[str]) -> None:
    text = "\n".join(policy_lines) + "\n"

    assert _verifier_policy(text) == _domain_policy(text)


@PROPERTY
@given(
    size=st.integers(0, 2**40),
    timestamps=st.lists(st.integers(1, 2**40), min_size=4, max_size=4),
    signing=st.lists(st.booleans(), min_size=4, max_size=4),
    flip=st.one_of(st.none(), st.integers(0, 3)),
)
def test_cosignatures_count_the_same(size: int, timestamps: list[int], signing: list[bool], flip: int | None) -> None:
    checkpoint = domain_checkpoint.Checkpoint("mlledger.local/ledger", size, bytes(32))
    note = domain_checkpoint.sign_checkpoint(
        checkpoint, checkpoint.origin, Ed25519PrivateKey.from_private_bytes(bytes(32))
    )
    for i, key in enumerate(_WITNESS_KEYS):
        if signing[i]:
            line = domain_cosignature.sign_cosignature(checkpoint.body(), f"w{i}.example", key, timestamps[i])
            if flip == i:
                line = domain_checkpoint.NoteSignature(line.key_name, line.key_hash, _flip(line.signature, 100))
            note += line.line()
    policy_text = "".join(f"witness n{i} {v}\n" for i, v in enumerate(_WITNESS_VKEYS)) + "quorum none\n"
    cosigners = [domain_cosignature.parse_cosigner_vkey(v) for v in _WITNESS_VKEYS]
    *_, body, signatures = verifier._parse_checkpoint(note)

    expected = {
        f"n{i}" for i, c in enumerate(cosigners) if c.name in domain_cosignature.valid_cosigners(note, cosigners)
    }
    try:
        found: set[str] | None = verifier.cosigned_by(body, signatures, verifier.parse_witness_policy(policy_text))
    except ValueError:
        found = None  # the verifier refuses a bad line from a known witness; the domain skips it

    assert found == (expected if flip is None or not signing[flip] else None)
