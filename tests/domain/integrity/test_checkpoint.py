"""Tests of domain.integrity.checkpoint: C2SP tlog-checkpoint bodies in C2SP signed-note form.

Interoperability anchors (used as data):

* the example key and note of golang.org/x/mod/sumdb/note ("PeterNeumann"),
  whose Ed25519 seed is published, so our key hash, verifier key and signature
  line must reproduce Go's byte for byte;
* a checkpoint signed by the production Go checksum database (sum.golang.org),
  checked with its published verifier key.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.integrity.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointSignatureError,
    NoteSignature,
    add_signature,
    note_key_hash,
    parse_checkpoint,
    parse_signed_note,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
)

EM_DASH = "\u2014"
ORIGIN = "ledger.example/log"
ROOT = hashlib.sha256(b"some root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()

# golang.org/x/mod/sumdb/note example: PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>
GO_SEED_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE_LINE = (
    f"{EM_DASH} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# A tree head signed by sum.golang.org, and the key the go command ships with.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "65209736\n"
    "5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n"
    "\n"
    f"{EM_DASH} sum.golang.org "
    "Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n"
)


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


KEY = _key(1)
OTHER_KEY = _key(2)
CHECKPOINT = Checkpoint(ORIGIN, 1234, ROOT)
NOTE = sign_checkpoint(CHECKPOINT, ORIGIN, KEY)
BODY = CHECKPOINT.body()


def _signature_line(name: str, blob: bytes) -> str:
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def test_body_is_origin_size_base64_root_and_extension_lines() -> None:
    checkpoint = Checkpoint(ORIGIN, 7, ROOT, ("ext one", "ext two"))
    assert checkpoint.body() == f"{ORIGIN}\n7\n{ROOT_B64}\next one\next two\n"


def test_signed_note_is_body_blank_line_and_em_dash_signature_line() -> None:
    pattern = re.escape(BODY) + "\n" + EM_DASH + " " + re.escape(ORIGIN) + r" [A-Za-z0-9+/]{91}=\n"
    assert re.fullmatch(pattern, NOTE)


def test_signature_is_ed25519_over_the_body_bytes() -> None:
    _, signatures = parse_checkpoint(NOTE)
    KEY.public_key().verify(signatures[0].signature, BODY.encode())


def test_parse_returns_the_checkpoint_and_its_signature() -> None:
    checkpoint, signatures = parse_checkpoint(NOTE)
    assert checkpoint == CHECKPOINT
    assert [(s.key_name, s.key_hash, len(s.signature)) for s in signatures] == [
        (ORIGIN, note_key_hash(ORIGIN, _raw(KEY.public_key())), 64)
    ]


def test_verify_returns_the_checkpoint_signed_by_the_key() -> None:
    assert verify_checkpoint(NOTE, ORIGIN, KEY.public_key()) == CHECKPOINT


def test_checkpoint_with_extension_lines_round_trips() -> None:
    checkpoint = Checkpoint(ORIGIN, 0, ROOT, ("Timestamp: 1700000000",))
    note = sign_checkpoint(checkpoint, ORIGIN, KEY)
    assert verify_checkpoint(note, ORIGIN, KEY.public_key()) == checkpoint


def test_parse_accepts_the_note_as_utf8_bytes() -> None:
    assert parse_checkpoint(NOTE.encode())[0] == CHECKPOINT


origins = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(
    origins,
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(origins, max_size=3),
)
def test_any_valid_checkpoint_round_trips(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    note = sign_checkpoint(checkpoint, "ledger.example/key", KEY)
    assert verify_checkpoint(note, "ledger.example/key", KEY.public_key()) == checkpoint


# --------------------------------------------------------------------------
# Interoperability with golang.org/x/mod/sumdb/note
# --------------------------------------------------------------------------


def _go_key() -> Ed25519PrivateKey:
    typed_seed = base64.b64decode(GO_SEED_B64)
    assert typed_seed[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(typed_seed[1:])


def test_verifier_key_matches_the_go_reference_key() -> None:
    assert verifier_key("PeterNeumann", _raw(_go_key().public_key())) == GO_VKEY


def test_signature_line_matches_the_go_reference_note_byte_for_byte() -> None:
    key = _go_key()
    key_hash = note_key_hash("PeterNeumann", _raw(key.public_key()))
    line = NoteSignature("PeterNeumann", key_hash, key.sign(GO_TEXT.encode())).line()
    assert line == GO_SIGNATURE_LINE


def test_parse_signed_note_reads_the_go_reference_note() -> None:
    text, signatures = parse_signed_note(GO_TEXT + "\n" + GO_SIGNATURE_LINE)
    assert text == GO_TEXT
    assert [(s.key_name, s.key_hash.hex()) for s in signatures] == [("PeterNeumann", "c74f20a3")]


def test_verify_accepts_a_checkpoint_signed_by_sum_golang_org() -> None:
    name, public_key = parse_verifier_key(SUMDB_VKEY)
    checkpoint = verify_checkpoint(SUMDB_NOTE, name, public_key)
    assert (checkpoint.origin, checkpoint.tree_size) == ("go.sum database tree", 65209736)


def test_verify_rejects_a_changed_sum_golang_org_checkpoint() -> None:
    name, public_key = parse_verifier_key(SUMDB_VKEY)
    with pytest.raises(CheckpointSignatureError):
        verify_checkpoint(SUMDB_NOTE.replace("65209736", "65209737"), name, public_key)


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


def test_key_hash_is_sha256_of_name_newline_type_and_public_key() -> None:
    raw = _raw(KEY.public_key())
    by_hand = hashlib.sha256(ORIGIN.encode() + b"\x0a" + b"\x01" + raw).digest()[:4]
    assert note_key_hash(ORIGIN, raw) == by_hand


def test_signature_lines_start_with_the_key_hash() -> None:
    _, signatures = parse_checkpoint(NOTE)
    blob = base64.b64decode(NOTE.rsplit(" ", 1)[1])
    assert blob[:4] == signatures[0].key_hash == note_key_hash(ORIGIN, _raw(KEY.public_key()))


def test_verifier_key_is_name_hex_key_hash_and_typed_public_key() -> None:
    raw = _raw(KEY.public_key())
    expected_hash = note_key_hash(ORIGIN, raw).hex()
    expected_key = base64.b64encode(b"\x01" + raw).decode()
    assert verifier_key(ORIGIN, raw) == f"{ORIGIN}+{expected_hash}+{expected_key}"


def test_parse_verifier_key_returns_the_name_and_key() -> None:
    raw = _raw(KEY.public_key())
    name, public_key = parse_verifier_key(verifier_key(ORIGIN, raw))
    assert (name, _raw(public_key)) == (ORIGIN, raw)


def test_parse_verifier_key_rejects_a_wrong_key_hash() -> None:
    with pytest.raises(CheckpointFormatError, match="wrong key hash"):
        parse_verifier_key(GO_VKEY.replace("c74f20a3", "c74f20a4"))


@pytest.mark.parametrize("name", ["", "two words", "a+b", "tab\there", "nbsp\u00a0here"])
def test_key_names_with_spaces_or_plus_are_rejected(name: str) -> None:
    with pytest.raises(CheckpointFormatError):
        sign_checkpoint(CHECKPOINT, name, KEY)


# --------------------------------------------------------------------------
# Signature checks
# --------------------------------------------------------------------------


def test_verify_rejects_a_note_signed_by_another_key() -> None:
    note = sign_checkpoint(CHECKPOINT, ORIGIN, OTHER_KEY)
    with pytest.raises(CheckpointSignatureError, match="no signature"):
        verify_checkpoint(note, ORIGIN, KEY.public_key())


def test_verify_rejects_a_note_signed_under_another_key_name() -> None:
    note = sign_checkpoint(CHECKPOINT, "someone.else/log", KEY)
    with pytest.raises(CheckpointSignatureError, match="no signature"):
        verify_checkpoint(note, ORIGIN, KEY.public_key())


@pytest.mark.parametrize(
    ("old", "new"),
    [("ledger", "ledgeR"), ("1234", "1235"), (ROOT_B64[:10], ROOT_B64[:9] + "Q")],
    ids=["origin", "size", "root"],
)
def test_verify_rejects_a_body_changed_by_one_character(old: str, new: str) -> None:
    tampered = NOTE.replace(old, new, 1)
    assert tampered != NOTE
    with pytest.raises(CheckpointSignatureError, match="does not verify"):
        verify_checkpoint(tampered, ORIGIN, KEY.public_key())


def test_verify_rejects_a_signature_with_one_bit_flipped() -> None:
    _, signatures = parse_checkpoint(NOTE)
    sig = bytearray(signatures[0].signature)
    sig[10] ^= 0x01
    note = BODY + "\n" + _signature_line(ORIGIN, signatures[0].key_hash + bytes(sig))
    with pytest.raises(CheckpointSignatureError, match="does not verify"):
        verify_checkpoint(note, ORIGIN, KEY.public_key())


def test_verify_ignores_signature_lines_from_other_keys_and_types() -> None:
    cosignature = _signature_line("witness.example", b"\xaa\xbb\xcc\xdd" + bytes(72))
    note = add_signature(NOTE, "other.example/key", OTHER_KEY) + cosignature
    assert verify_checkpoint(note, ORIGIN, KEY.public_key()) == CHECKPOINT


def test_added_signature_verifies_alongside_the_first() -> None:
    note = add_signature(NOTE, "other.example/key", OTHER_KEY)
    assert verify_checkpoint(note, "other.example/key", OTHER_KEY.public_key()) == CHECKPOINT
    assert verify_checkpoint(note, ORIGIN, KEY.public_key()) == CHECKPOINT


def test_verify_rejects_a_note_with_a_failing_signature_from_the_key() -> None:
    _, signatures = parse_checkpoint(NOTE)
    bad = _signature_line(ORIGIN, signatures[0].key_hash + bytes(64))
    with pytest.raises(CheckpointSignatureError, match="does not verify"):
        verify_checkpoint(NOTE + bad, ORIGIN, KEY.public_key())


def test_checkpoint_errors_are_value_errors() -> None:
    assert issubclass(CheckpointFormatError, ValueError)
    assert issubclass(CheckpointSignatureError, ValueError)


# --------------------------------------------------------------------------
# Malformed notes
# --------------------------------------------------------------------------

SIGNATURE_LINE = NOTE[len(BODY) + 1 :]
URLSAFE_ROOT_B64 = base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode()
# Same 32 bytes as ROOT_B64 but with non-zero padding bits in the last character.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
NONCANONICAL_ROOT_B64 = ROOT_B64[:-2] + _ALPHABET[_ALPHABET.index(ROOT_B64[-2]) | 1] + "="


def _note(body: str) -> str:
    return body + "\n" + SIGNATURE_LINE


MALFORMED_NOTES = {
    "no blank line": BODY + SIGNATURE_LINE,
    "no signature lines": BODY + "\n",
    "missing final newline": NOTE[:-1],
    "text after the signatures": NOTE + "trailing words\n",
    "non-numeric size": _note(f"{ORIGIN}\nfive\n{ROOT_B64}\n"),
    "negative size": _note(f"{ORIGIN}\n-5\n{ROOT_B64}\n"),
    "size with plus sign": _note(f"{ORIGIN}\n+5\n{ROOT_B64}\n"),
    "size with leading zero": _note(f"{ORIGIN}\n05\n{ROOT_B64}\n"),
    "size with spaces": _note(f"{ORIGIN}\n 5\n{ROOT_B64}\n"),
    "size in non-ascii digits": _note(f"{ORIGIN}\n\u0665\n{ROOT_B64}\n"),
    "size beyond 64 bits": _note(f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n"),
    "bad base64": _note(f"{ORIGIN}\n5\nnot base64 at all!\n"),
    "unpadded base64": _note(f"{ORIGIN}\n5\n{ROOT_B64.rstrip('=')}\n"),
    "url-safe base64": _note(f"{ORIGIN}\n5\n{URLSAFE_ROOT_B64}\n"),
    "non-canonical base64": _note(f"{ORIGIN}\n5\n{NONCANONICAL_ROOT_B64}\n"),
    "31-byte root": _note(f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n"),
    "33-byte root": _note(f"{ORIGIN}\n5\n{base64.b64encode(ROOT + b'x').decode()}\n"),
    "missing root line": _note(f"{ORIGIN}\n5\n"),
    "empty origin": _note(f"\n5\n{ROOT_B64}\n"),
    "empty extension line": f"{ORIGIN}\n5\n{ROOT_B64}\n\next\n\n" + SIGNATURE_LINE,
    "control character": _note(f"{ORIGIN}\r\n5\n{ROOT_B64}\n"),
    "hyphen instead of em dash": BODY + "\n" + "-" + SIGNATURE_LINE[1:],
    "signature without key name": BODY + "\n" + f"{EM_DASH} {SIGNATURE_LINE.split()[-1]}\n",
    "signature not base64": BODY + "\n" + f"{EM_DASH} {ORIGIN} ***\n",
    "signature of only a key hash": BODY + "\n" + _signature_line(ORIGIN, b"\x01\x02\x03\x04"),
    "key name with plus": BODY + "\n" + SIGNATURE_LINE.replace(ORIGIN, "a+b"),
    "more than 100 signatures": BODY + "\n" + SIGNATURE_LINE * 101,
}


@pytest.mark.parametrize("note", MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_note_raises_checkpoint_format_error(note: str) -> None:
    with pytest.raises(CheckpointFormatError):
        parse_checkpoint(note)


def test_malformed_note_is_refused_before_any_signature_check() -> None:
    with pytest.raises(CheckpointFormatError):
        verify_checkpoint(MALFORMED_NOTES["31-byte root"], ORIGIN, KEY.public_key())


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, ROOT, ()),
        ("two\nlines", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, 2**64, ROOT, ()),
        (ORIGIN, True, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\nb",)),
        (ORIGIN, 1, ROOT, ("bell\x07",)),
    ],
    ids=[
        "empty origin",
        "origin with newline",
        "negative size",
        "size beyond 64 bits",
        "boolean size",
        "31-byte root",
        "empty extension",
        "extension with newline",
        "extension with control character",
    ],
)
def test_checkpoint_refuses_fields_it_cannot_write(fields: tuple[object, ...]) -> None:
    with pytest.raises(CheckpointFormatError):
        Checkpoint(*fields)  # type: ignore[arg-type]
