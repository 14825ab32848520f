"""Tests of domain.integrity.cosignature (C2SP tlog-cosignature, cosignature/v1) and
domain.integrity.witness_policy (C2SP tlog-policy)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.integrity.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    add_signature,
    parse_signed_note,
    sign_checkpoint,
    verifier_key,
)
from domain.integrity.cosignature import (
    AddCheckpointRequest,
    cosigner_vkey,
    parse_add_checkpoint,
    parse_cosigner_vkey,
    sign_cosignature,
    valid_cosigners,
    verify_cosignature,
)
from domain.integrity.keys import raw_public_key
from domain.integrity.witness_policy import PolicyError, PolicyWitness, k_of_n, parse_policy

BODY = "example.com/log\n5\n" + base64.b64encode(bytes(32)).decode() + "\n"


def _witness(name: str = "witness.example/w1") -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, cosigner_vkey(name, raw_public_key(key.public_key()))


def test_the_key_id_hashes_the_name_a_newline_the_type_byte_0x04_and_the_key() -> None:
    key, vkey = _witness()
    raw = raw_public_key(key.public_key())

    expected = hashlib.sha256(b"witness.example/w1\n\x04" + raw).digest()[:4]

    encoded = base64.b64encode(b"\x04" + raw).decode()

    assert vkey == f"witness.example/w1+{expected.hex()}+{encoded}"
    assert parse_cosigner_vkey(vkey).key_hash == expected


def test_a_cosignature_is_key_id_then_big_endian_time_then_ed25519_over_the_v1_message() -> None:
    key, vkey = _witness()

    line = sign_cosignature(BODY, "witness.example/w1", key, 1679315147)

    assert line.key_hash == parse_cosigner_vkey(vkey).key_hash
    assert line.signature[:8] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    key.public_key().verify(line.signature[8:], message)  # raises if the layout is wrong
    assert verify_cosignature(BODY, line, parse_cosigner_vkey(vkey)) == 1679315147


def test_a_cosignature_over_another_body_or_time_does_not_verify() -> None:
    key, vkey = _witness()
    line = sign_cosignature(BODY, "witness.example/w1", key, 1000)
    forged = type(line)(line.key_name, line.key_hash, (1001).to_bytes(8, "big") + line.signature[8:])

    with pytest.raises(CheckpointFormatError):
        verify_cosignature(BODY.replace("\n5\n", "\n6\n"), line, parse_cosigner_vkey(vkey))
    with pytest.raises(CheckpointFormatError):
        verify_cosignature(BODY, forged, parse_cosigner_vkey(vkey))


def test_a_log_key_is_not_a_cosigner_key() -> None:
    key = Ed25519PrivateKey.generate()

    with pytest.raises(CheckpointFormatError, match="0x04"):
        parse_cosigner_vkey(verifier_key("example.com/log", raw_public_key(key.public_key())))


def test_valid_cosigners_names_only_known_witnesses_with_valid_lines() -> None:
    log_key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint("example.com/log", 5, bytes(32)), "example.com/log", log_key)
    w1, v1 = _witness("w1.example")
    w2, v2 = _witness("w2.example")
    stranger, _ = _witness("w3.example")
    for name, key in (("w1.example", w1), ("w3.example", stranger)):
        note = note + sign_cosignature(BODY, name, key, 7).line()
    note = add_signature(note, "w2.example", w2)  # a plain Ed25519 line under a witness's name: not a cosignature

    found = valid_cosigners(note, [parse_cosigner_vkey(v1), parse_cosigner_vkey(v2)])

    assert found == {"w1.example": 7}
    assert len(parse_signed_note(note)[1]) == 4


def test_an_add_checkpoint_body_round_trips() -> None:
    request = AddCheckpointRequest(3, (b"\x01" * 32, b"\x02" * 32), "example.com/log\n5\nAAAA\n\n— x y\n")

    assert request.body().startswith("old 3\n" + base64.b64encode(b"\x01" * 32).decode() + "\n")
    assert parse_add_checkpoint(request.body().encode()) == request


@pytest.mark.parametrize(
    "body",
    [b"old 01\n\nnote", b"old -1\n\nnote", b"new 1\n\nnote", b"old 1\nAAAA\n\nnote", b"old 1\nnote", b"\xff"],
)
def test_a_malformed_add_checkpoint_body_is_refused(body: bytes) -> None:
    with pytest.raises(CheckpointFormatError):
        parse_add_checkpoint(body)


def test_more_than_63_proof_lines_are_refused() -> None:
    body = AddCheckpointRequest(1, tuple(bytes([i]) * 32 for i in range(64)), "n\n").body()

    with pytest.raises(CheckpointFormatError, match="63"):
        parse_add_checkpoint(body.encode())


def test_a_policy_with_groups_needs_its_thresholds() -> None:
    vkeys = [_witness(f"w{i}.example")[1] for i in range(4)]
    policy = parse_policy(
        "# two organisations\n"
        + "".join(f"witness X{i} {vkeys[i]}\n" for i in range(3))
        + "group X 2 X0 X1 X2\n"
        + f"  witness Y {vkeys[3]}  https://y.example/\n"
        + "group both all X Y\nquorum both\n"
    )

    assert policy.witnesses["Y"].url == "https://y.example/"
    assert policy.satisfied_by({"X0", "X2", "Y"})
    assert not policy.satisfied_by({"X0", "Y"})
    assert not policy.satisfied_by({"X0", "X1", "X2"})


def test_quorum_none_needs_no_cosignature() -> None:
    assert parse_policy("quorum none\n").satisfied_by(set())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "quorum nobody\n",
        "group g 1 a\nquorum g\n",
        "quorum none\nquorum none\n",
        "witness a not-a-vkey\nquorum a\n",
        "frobnicate\nquorum none\n",
    ],
)
def test_an_invalid_policy_is_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_a_policy_refuses_a_threshold_above_its_members_and_a_duplicate_key() -> None:
    _, vkey = _witness("a.example")

    with pytest.raises(PolicyError, match="threshold"):
        parse_policy(f"witness a {vkey}\ngroup g 2 a\nquorum g\n")
    with pytest.raises(PolicyError, match="duplicate"):
        parse_policy(f"witness a {vkey}\nwitness b {vkey}\nquorum a\n")


def test_k_of_n_writes_a_policy_that_reads_back_the_same() -> None:
    witnesses = [PolicyWitness(f"w{i}", parse_cosigner_vkey(_witness(f"w{i}.example")[1])) for i in range(3)]

    policy = k_of_n(witnesses, 2)

    assert parse_policy(policy.text).satisfied_by({"w0", "w2"})
    assert not policy.satisfied_by({"w1"})
    with pytest.raises(PolicyError):
        k_of_n(witnesses, 4)
