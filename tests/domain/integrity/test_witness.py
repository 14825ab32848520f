"""Tests of domain.integrity.witness: the add-checkpoint decision of a C2SP tlog-witness."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.integrity import merkle
from domain.integrity.checkpoint import Checkpoint, NoteSignature, add_signature, parse_signed_note, sign_checkpoint
from domain.integrity.cosignature import AddCheckpointRequest
from domain.integrity.witness import (
    CheckpointNotTrusted,
    InconsistentCheckpoint,
    LogKey,
    LogView,
    MalformedSubmission,
    OldSizeMismatch,
    UnknownLog,
    check_add_checkpoint,
)

ORIGIN = "example.com/log"
KEY = Ed25519PrivateKey.generate()
TRUSTED = {ORIGIN: [LogKey(ORIGIN, KEY.public_key())]}


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _note(leaves: list[bytes], key: Ed25519PrivateKey = KEY, origin: str = ORIGIN) -> str:
    return sign_checkpoint(Checkpoint(origin, len(leaves), merkle.root_hash(leaves)), origin, key)


def _request(old: int, leaves: list[bytes], **kwargs: object) -> AddCheckpointRequest:
    proof = tuple(merkle.consistency_proof(leaves, old)) if 0 < old < len(leaves) else ()
    return AddCheckpointRequest(old, proof, _note(leaves, **kwargs))  # type: ignore[arg-type]


def test_a_first_checkpoint_from_size_zero_is_accepted() -> None:
    leaves = _leaves(5)

    checkpoint = check_add_checkpoint(_request(0, leaves), TRUSTED, None)

    assert (checkpoint.tree_size, checkpoint.root_hash) == (5, merkle.root_hash(leaves))


def test_a_checkpoint_that_extends_what_was_seen_is_accepted() -> None:
    leaves = _leaves(13)
    seen = LogView(5, merkle.root_hash(leaves[:5]))

    assert check_add_checkpoint(_request(5, leaves), TRUSTED, seen).tree_size == 13


def test_a_rewritten_history_signed_by_the_log_key_is_inconsistent() -> None:
    seen = LogView(5, merkle.root_hash(_leaves(5)))
    forked = _leaves(5, b"other") + _leaves(8)

    with pytest.raises(InconsistentCheckpoint):
        check_add_checkpoint(_request(5, forked), TRUSTED, seen)


def test_the_same_size_with_another_root_is_inconsistent() -> None:
    seen = LogView(5, merkle.root_hash(_leaves(5)))

    with pytest.raises(InconsistentCheckpoint):
        check_add_checkpoint(_request(5, _leaves(5, b"other")), TRUSTED, seen)


def test_an_old_size_other_than_the_latest_cosigned_is_a_conflict_naming_it() -> None:
    seen = LogView(5, merkle.root_hash(_leaves(5)))

    with pytest.raises(OldSizeMismatch) as caught:
        check_add_checkpoint(_request(0, _leaves(8)), TRUSTED, seen)

    assert caught.value.latest_size == 5


def test_an_old_size_above_the_checkpoint_is_malformed() -> None:
    request = AddCheckpointRequest(9, (), _note(_leaves(5)))

    with pytest.raises(MalformedSubmission):
        check_add_checkpoint(request, TRUSTED, LogView(9, bytes(32)))


def test_a_proof_from_size_zero_must_be_empty() -> None:
    request = AddCheckpointRequest(0, (bytes(32),), _note(_leaves(5)))

    with pytest.raises(InconsistentCheckpoint):
        check_add_checkpoint(request, TRUSTED, None)


def test_a_checkpoint_of_size_zero_needs_the_empty_root() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), ORIGIN, KEY)

    with pytest.raises(InconsistentCheckpoint):
        check_add_checkpoint(AddCheckpointRequest(0, (), note), TRUSTED, None)


def test_an_unknown_origin_is_refused() -> None:
    with pytest.raises(UnknownLog):
        check_add_checkpoint(_request(0, _leaves(3), origin="other.example/log"), TRUSTED, None)


def test_a_checkpoint_signed_by_another_key_is_not_trusted() -> None:
    with pytest.raises(CheckpointNotTrusted):
        check_add_checkpoint(_request(0, _leaves(3), key=Ed25519PrivateKey.generate()), TRUSTED, None)


def test_a_bad_line_from_the_trusted_key_is_refused_even_beside_a_good_one() -> None:
    good = _note(_leaves(3))
    body, [line] = parse_signed_note(good)
    flipped = NoteSignature(line.key_name, line.key_hash, bytes([line.signature[0] ^ 1]) + line.signature[1:])
    note = body + "\n" + line.line() + flipped.line()

    with pytest.raises(CheckpointNotTrusted):
        check_add_checkpoint(AddCheckpointRequest(0, (), note), TRUSTED, None)


def test_lines_from_unknown_keys_are_ignored() -> None:
    note = add_signature(_note(_leaves(3)), "stranger.example", Ed25519PrivateKey.generate())

    assert check_add_checkpoint(AddCheckpointRequest(0, (), note), TRUSTED, None).tree_size == 3
