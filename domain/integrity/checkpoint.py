"""Signed checkpoints of the transparency log: C2SP tlog-checkpoint in C2SP signed-note form.

A checkpoint commits to the log's Merkle tree at one size (https://c2sp.org/tlog-checkpoint)::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]

It is published as a signed note (https://c2sp.org/signed-note): the body, a
blank line, then one or more signature lines::

    — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\\n

The Ed25519 signature covers the body bytes (UTF-8, final newline included),
and the key hash is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``.
Notes produced here open with ``golang.org/x/mod/sumdb/note`` given the key's
:func:`verifier_key`, and this module reads notes that it produces, including
ones carrying extra signature lines from other keys (witness cosignatures),
which verification ignores.

Nothing in this module performs I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.errors import LedgerError
from domain.integrity.keys import NoteSigner

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointSignatureError",
    "NoteSignature",
    "add_signature",
    "note_key_hash",
    "parse_checkpoint",
    "parse_signed_note",
    "parse_verifier_key",
    "sign_checkpoint",
    "verifier_key",
    "verify_checkpoint",
]

ED25519_SIGNATURE_TYPE: Final[int] = 0x01
"""signed-note signature type byte of plain Ed25519 signatures."""

MAX_SIGNATURES: Final[int] = 100
"""Most signature lines a note may carry (the limit golang.org/x/mod/sumdb/note applies)."""

ROOT_HASH_SIZE: Final[int] = 32
"""Length in bytes of the root hash (SHA-256)."""

ED25519_SIGNATURE_SIZE: Final[int] = 64
ED25519_PUBLIC_KEY_SIZE: Final[int] = 32
KEY_HASH_SIZE: Final[int] = 4
MAX_TREE_SIZE: Final[int] = 2**64 - 1

_SIGNATURE_PREFIX: Final[str] = "\u2014 "  # EM DASH, SPACE
_DECIMAL: Final[re.Pattern[str]] = re.compile(r"0|[1-9][0-9]*")
_BASE64: Final[re.Pattern[str]] = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_CONTROL: Final[re.Pattern[str]] = re.compile(r"[\x00-\x09\x0b-\x1f]")
_HEX8: Final[re.Pattern[str]] = re.compile(r"[0-9a-f]{8}")


class CheckpointError(LedgerError, ValueError):
    """Root of the errors about checkpoints and signed notes."""

    title = "Checkpoint error"


class CheckpointFormatError(CheckpointError):
    """Text that is not a well-formed checkpoint or signed note, or a value that cannot be one."""

    title = "Malformed checkpoint"


class CheckpointSignatureError(CheckpointError):
    """A signed checkpoint that carries no valid signature from the expected key."""

    title = "Checkpoint signature invalid"


# --------------------------------------------------------------------------
# Small validators
# --------------------------------------------------------------------------


def _check_text(text: str, what: str) -> bytes:
    """UTF-8 bytes of ``text``; refuse lone surrogates and ASCII control characters but newline."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointFormatError(f"{what} is not valid UTF-8") from exc
    match = _CONTROL.search(text)
    if match:
        raise CheckpointFormatError(f"{what} contains the control character U+{ord(match.group()):04X}")
    return data


def _check_key_name(key_name: str) -> str:
    """Refuse key names the signed-note spec forbids: empty, spaces, '+', control characters."""
    if not isinstance(key_name, str) or not key_name:
        raise CheckpointFormatError("key name must be a non-empty string")
    if "+" in key_name:
        raise CheckpointFormatError(f"key name {key_name!r} contains '+'")
    if any(c.isspace() for c in key_name):
        raise CheckpointFormatError(f"key name {key_name!r} contains a space")
    _check_text(key_name, f"key name {key_name!r}")
    return key_name


def _check_line(line: str, what: str) -> str:
    if not isinstance(line, str) or not line:
        raise CheckpointFormatError(f"{what} must be a non-empty string")
    if "\n" in line:
        raise CheckpointFormatError(f"{what} contains a newline")
    _check_text(line, what)
    return line


def _decode_base64(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4, padded, canonical)."""
    if not _BASE64.fullmatch(text):
        raise CheckpointFormatError(f"{what} is not padded standard base64: {text!r}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointFormatError(f"{what} is not valid base64: {text!r}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointFormatError(f"{what} is not canonical base64: {text!r}")
    return raw


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


def note_key_hash(key_name: str, raw_public_key: bytes) -> bytes:
    """The 4-byte signed-note key hash of an Ed25519 key.

    ``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]``; it prefixes
    every signature the key makes, so verifiers can pick the right key.
    """
    _check_key_name(key_name)
    key = bytes(raw_public_key)
    if len(key) != ED25519_PUBLIC_KEY_SIZE:
        raise CheckpointFormatError(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes, got {len(key)}")
    data = key_name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + key
    return hashlib.sha256(data).digest()[:KEY_HASH_SIZE]


def verifier_key(key_name: str, raw_public_key: bytes) -> str:
    """The standard verifier key string ``<name>+<hex key hash>+<base64(0x01 || public key)>``.

    This is what clients such as ``golang.org/x/mod/sumdb/note`` are configured
    with to check the log's checkpoints.
    """
    key_hash = note_key_hash(key_name, raw_public_key)
    encoded = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + bytes(raw_public_key))
    return f"{key_name}+{key_hash.hex()}+{encoded.decode('ascii')}"


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Read a verifier key string back into ``(key name, public key)``.

    Raises :class:`CheckpointFormatError` when it is malformed, not Ed25519, or
    when its key hash does not match its name and key.
    """
    if not isinstance(vkey, str):
        raise CheckpointFormatError("verifier key must be a string")
    name, sep1, rest = vkey.partition("+")
    hash_hex, sep2, key_b64 = rest.partition("+")
    if not sep1 or not sep2 or not _HEX8.fullmatch(hash_hex):
        raise CheckpointFormatError(f"malformed verifier key {vkey!r}")
    _check_key_name(name)
    raw = _decode_base64(key_b64, "verifier key")
    if len(raw) != 1 + ED25519_PUBLIC_KEY_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
        raise CheckpointFormatError(f"verifier key {vkey!r} is not an Ed25519 key")
    if note_key_hash(name, raw[1:]).hex() != hash_hex:
        raise CheckpointFormatError(f"verifier key {vkey!r} has the wrong key hash")
    return name, Ed25519PublicKey.from_public_bytes(raw[1:])


# --------------------------------------------------------------------------
# Checkpoint body
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size and root hash, plus optional extension lines.

    Constructing one validates it, so every ``Checkpoint`` can be written as a
    tlog-checkpoint body; invalid values raise :class:`CheckpointFormatError`.
    """

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check every field can be written as a checkpoint line."""
        _check_line(self.origin, "origin")
        size = self.tree_size
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
            raise CheckpointFormatError(f"tree size must be an integer in [0, 2**64), got {size!r}")
        if not isinstance(self.root_hash, bytes | bytearray):
            raise CheckpointFormatError("root hash must be bytes")
        if len(self.root_hash) != ROOT_HASH_SIZE:
            raise CheckpointFormatError(f"root hash must be {ROOT_HASH_SIZE} bytes, got {len(self.root_hash)}")
        object.__setattr__(self, "root_hash", bytes(self.root_hash))
        if isinstance(self.extensions, str) or not isinstance(self.extensions, Sequence):
            raise CheckpointFormatError("extensions must be a sequence of lines")
        extensions = tuple(self.extensions)
        for i, line in enumerate(extensions):
            _check_line(line, f"extension line {i}")
        object.__setattr__(self, "extensions", extensions)

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in newline."""
        lines = [
            self.origin,
            str(self.tree_size),
            base64.b64encode(self.root_hash).decode("ascii"),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the note text, final newline included).

        Raises :class:`CheckpointFormatError` when it has fewer than three lines,
        an empty line, a size that is not canonical decimal, or a root that is
        not the padded base64 of 32 bytes.
        """
        if not isinstance(text, str):
            raise CheckpointFormatError("checkpoint body must be a string")
        _check_text(text, "checkpoint body")
        if not text.endswith("\n"):
            raise CheckpointFormatError("checkpoint body does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointFormatError(f"checkpoint body needs origin, size and root lines, got {len(lines)} line(s)")
        for number, line in enumerate(lines, start=1):
            if not line:
                raise CheckpointFormatError(f"checkpoint line {number} is empty")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise CheckpointFormatError(f"tree size {size_text!r} is not a decimal number")
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise CheckpointFormatError(f"tree size {size_text} does not fit in 64 bits")
        root = _decode_base64(root_text, "root hash")
        if len(root) != ROOT_HASH_SIZE:
            raise CheckpointFormatError(f"root hash must be {ROOT_HASH_SIZE} bytes, got {len(root)}")
        return cls(origin, size, root, tuple(extensions))


# --------------------------------------------------------------------------
# Signed notes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note: key name, 4-byte key hash and signature bytes.

    Ed25519 signatures are 64 bytes; lines of other signature types (for
    example witness cosignatures) are kept with their own length so that notes
    carrying them still parse.
    """

    key_name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line as it appears in the note, final newline included."""
        encoded = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{_SIGNATURE_PREFIX}{self.key_name} {encoded}\n"


def parse_signed_note(note_text: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text (final newline included) and its signature lines.

    Follows the signed-note rules as ``golang.org/x/mod/sumdb/note`` applies
    them: valid UTF-8 without control characters other than newline; the text
    ends at the last blank line; then 1 to :data:`MAX_SIGNATURES` lines
    ``— <name> <base64(key hash || signature)>``, each ending in newline.
    Raises :class:`CheckpointFormatError` otherwise. Signatures are not checked.
    """
    if isinstance(note_text, bytes | bytearray):
        try:
            note_text = bytes(note_text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointFormatError("signed note is not valid UTF-8") from exc
    if not isinstance(note_text, str):
        raise CheckpointFormatError("signed note must be text")
    _check_text(note_text, "signed note")
    if not note_text.endswith("\n"):
        raise CheckpointFormatError("signed note does not end in a newline")
    split = note_text.rfind("\n\n")
    if split < 0:
        raise CheckpointFormatError("signed note has no blank line before its signatures")
    text, block = note_text[: split + 1], note_text[split + 2 :]
    if not block:
        raise CheckpointFormatError("signed note has no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointFormatError(f"signed note has {len(lines)} signature lines, more than {MAX_SIGNATURES}")
    signatures: list[NoteSignature] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIGNATURE_PREFIX):
            raise CheckpointFormatError(f"signature line {number} does not start with an em dash and a space: {line!r}")
        name, sep, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not sep or not encoded:
            raise CheckpointFormatError(f"signature line {number} has no signature: {line!r}")
        _check_key_name(name)
        raw = _decode_base64(encoded, f"signature line {number}")
        if len(raw) <= KEY_HASH_SIZE:
            raise CheckpointFormatError(f"signature line {number} is too short")
        signatures.append(NoteSignature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:]))
    return text, signatures


def parse_checkpoint(note_text: str | bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint into the checkpoint and its (unverified) signatures.

    Raises :class:`CheckpointFormatError` on malformed text: no blank line, bad
    size, bad base64, a root that is not 32 bytes, lines not ending in newline,
    malformed signature lines. Use :func:`verify_checkpoint` to trust it.
    """
    text, signatures = parse_signed_note(note_text)
    return Checkpoint.from_body(text), signatures


def _signature_line(body: bytes, key_name: str, private_key: NoteSigner) -> NoteSignature:
    _check_key_name(key_name)
    key_hash = note_key_hash(key_name, _raw_public_key(private_key.public_key()))
    return NoteSignature(key_name, key_hash, private_key.sign(body))


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, private_key: NoteSigner) -> str:
    """Sign ``checkpoint`` with an Ed25519 key (in memory or in a token); return the full signed note text.

    The result is ``body + "\\n" + "— <key name> <base64(key hash || signature)>\\n"``.
    Raises :class:`CheckpointFormatError` on a key name with spaces or ``+``.
    """
    body = checkpoint.body()
    line = _signature_line(body.encode("utf-8"), key_name, private_key)
    return body + "\n" + line.line()


def add_signature(note_text: str, key_name: str, private_key: NoteSigner) -> str:
    """Add one more Ed25519 signature line to a signed note (a cosignature or a rotated key).

    An existing line from the same key (same name and key hash) is replaced;
    the others are kept. The note's signatures are not verified here.
    """
    text, signatures = parse_signed_note(note_text)
    new = _signature_line(text.encode("utf-8"), key_name, private_key)
    kept = [s for s in signatures if (s.key_name, s.key_hash) != (new.key_name, new.key_hash)]
    return text + "\n" + "".join(s.line() for s in [*kept, new])


def verify_checkpoint(note_text: str | bytes, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Return the checkpoint of a signed note once a signature by the given key verifies.

    Lines from other keys are ignored, as the signed-note spec requires. Raises
    :class:`CheckpointFormatError` on malformed text and
    :class:`CheckpointSignatureError` when there is no line from this key (same
    name and key hash) or when such a line does not verify.
    """
    text, signatures = parse_signed_note(note_text)
    checkpoint = Checkpoint.from_body(text)
    key_hash = note_key_hash(key_name, _raw_public_key(public_key))
    ours = [s for s in signatures if s.key_name == key_name and s.key_hash == key_hash]
    if not ours:
        raise CheckpointSignatureError(f"checkpoint has no signature from key {key_name}+{key_hash.hex()}")
    body = text.encode("utf-8")
    for signature in ours:
        if len(signature.signature) != ED25519_SIGNATURE_SIZE:
            raise CheckpointSignatureError(
                f"signature from key {key_name}+{key_hash.hex()} is not a 64-byte Ed25519 signature"
            )
        try:
            public_key.verify(signature.signature, body)
        except InvalidSignature as exc:
            raise CheckpointSignatureError(f"signature from key {key_name}+{key_hash.hex()} does not verify") from exc
    return checkpoint
