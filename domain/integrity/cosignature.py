"""Witness cosignatures (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``) and the
body of a tlog-witness ``add-checkpoint`` request.

A cosignature is one more signed-note line on a checkpoint::

    — <witness name> base64(key ID || u64 big-endian timestamp || Ed25519 signature)

with key ID ``SHA-256(<name> || "\\n" || 0x04 || public key)[:4]`` and the
signature over ``"cosignature/v1\\ntime <timestamp>\\n" + checkpoint body``
(https://c2sp.org/tlog-cosignature). A witness's verifier key is the signed-note
vkey with signature type 0x04.

The ``add-checkpoint`` body (https://c2sp.org/tlog-witness) is ``old <size>``,
up to 63 base64 consistency-proof lines, a blank line, then the signed checkpoint.

Nothing in this module performs I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.integrity.checkpoint import (
    CheckpointFormatError,
    NoteSignature,
    _check_key_name,
    _decode_base64,
    _raw_public_key,
    parse_signed_note,
)
from domain.integrity.keys import NoteSigner

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_PROOF_LINES",
    "AddCheckpointRequest",
    "Cosigner",
    "cosignature_key_hash",
    "cosignature_message",
    "cosigner_vkey",
    "parse_add_checkpoint",
    "parse_cosigner_vkey",
    "sign_cosignature",
    "verify_cosignature",
]

COSIGNATURE_TYPE: Final[int] = 0x04
"""signed-note signature type byte of Ed25519 ``cosignature/v1`` keys."""

MAX_PROOF_LINES: Final[int] = 63
"""Most consistency-proof lines an add-checkpoint request may carry."""

MAX_TIMESTAMP: Final[int] = 2**63 - 1
_TIMESTAMPED_SIZE: Final[int] = 8 + 64
_DECIMAL: Final[re.Pattern[str]] = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX8: Final[re.Pattern[str]] = re.compile(r"[0-9a-f]{8}")


def cosignature_key_hash(name: str, raw_public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x04 || public key)[:4]``: the key ID of a cosigner."""
    _check_key_name(name)
    if len(raw_public_key) != 32:
        raise CheckpointFormatError(f"an Ed25519 public key is 32 bytes, got {len(raw_public_key)}")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + raw_public_key).digest()[:4]


def cosigner_vkey(name: str, raw_public_key: bytes) -> str:
    """The verifier key ``<name>+<hex key ID>+<base64(0x04 || public key)>`` of a cosigner."""
    key_hash = cosignature_key_hash(name, raw_public_key)
    encoded = base64.b64encode(bytes([COSIGNATURE_TYPE]) + raw_public_key).decode("ascii")
    return f"{name}+{key_hash.hex()}+{encoded}"


@dataclass(frozen=True)
class Cosigner:
    """A witness as a verifier knows it: its name and Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key ID its cosignature lines start with."""
        return cosignature_key_hash(self.name, _raw_public_key(self.public_key))

    @property
    def vkey(self) -> str:
        """Its verifier key string."""
        return cosigner_vkey(self.name, _raw_public_key(self.public_key))


def parse_cosigner_vkey(vkey: str) -> Cosigner:
    """Read a cosigner verifier key (signature type 0x04); refuse any other kind or a wrong key ID."""
    if not isinstance(vkey, str):
        raise CheckpointFormatError("verifier key must be a string")
    name, sep1, rest = vkey.strip().partition("+")
    hash_hex, sep2, key_b64 = rest.partition("+")
    if not sep1 or not sep2 or not _HEX8.fullmatch(hash_hex):
        raise CheckpointFormatError(f"malformed verifier key {vkey!r}")
    _check_key_name(name)
    raw = _decode_base64(key_b64, "verifier key")
    if len(raw) != 33 or raw[0] != COSIGNATURE_TYPE:
        raise CheckpointFormatError(f"verifier key {vkey!r} is not an Ed25519 cosignature/v1 key (type 0x04)")
    if cosignature_key_hash(name, raw[1:]).hex() != hash_hex:
        raise CheckpointFormatError(f"verifier key {vkey!r} has the wrong key ID")
    return Cosigner(name, Ed25519PublicKey.from_public_bytes(raw[1:]))


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a cosigner signs: ``cosignature/v1``, ``time <t>``, then the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def sign_cosignature(body: str, name: str, private_key: NoteSigner, timestamp: int) -> NoteSignature:
    """Cosign a checkpoint body at ``timestamp`` (POSIX seconds, 1 to 2**63-1)."""
    if not isinstance(timestamp, int) or not 0 < timestamp <= MAX_TIMESTAMP:
        raise CheckpointFormatError(f"cosignature timestamp must be in [1, 2**63), got {timestamp!r}")
    signature = private_key.sign(cosignature_message(body, timestamp))
    key_hash = cosignature_key_hash(name, _raw_public_key(private_key.public_key()))
    return NoteSignature(name, key_hash, timestamp.to_bytes(8, "big") + signature)


def verify_cosignature(body: str, signature: NoteSignature, cosigner: Cosigner) -> int:
    """The timestamp of a valid cosignature by ``cosigner`` on ``body``.

    Raises :class:`CheckpointFormatError` when the line is not this cosigner's
    (name or key ID) or not 72 bytes, and when the signature does not verify.
    """
    if signature.key_name != cosigner.name or signature.key_hash != cosigner.key_hash:
        raise CheckpointFormatError(f"signature line is not from cosigner {cosigner.name}")
    if len(signature.signature) != _TIMESTAMPED_SIZE:
        raise CheckpointFormatError(f"cosignature from {cosigner.name} is not a timestamped Ed25519 signature")
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise CheckpointFormatError(f"cosignature from {cosigner.name} has timestamp {timestamp} out of range")
    try:
        cosigner.public_key.verify(signature.signature[8:], cosignature_message(body, timestamp))
    except InvalidSignature as exc:
        raise CheckpointFormatError(f"cosignature from {cosigner.name} does not verify") from exc
    return timestamp


def valid_cosigners(note_text: str, cosigners: list[Cosigner]) -> dict[str, int]:
    """Name -> timestamp of each known cosigner with a valid line on the note; other lines are ignored."""
    body, signatures = parse_signed_note(note_text)
    found: dict[str, int] = {}
    for cosigner in cosigners:
        for line in signatures:
            if line.key_name == cosigner.name and line.key_hash == cosigner.key_hash:
                try:
                    found[cosigner.name] = verify_cosignature(body, line, cosigner)
                except CheckpointFormatError:
                    continue
                break
    return found


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body: the old size, the proof and the signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def body(self) -> str:
        """The request body text."""
        lines = [f"old {self.old_size}", *(base64.b64encode(h).decode("ascii") for h in self.proof)]
        return "".join(line + "\n" for line in lines) + "\n" + self.note


def parse_add_checkpoint(data: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` body; :class:`CheckpointFormatError` when it is malformed.

    Only the framing is checked here (old-size line, proof lines of 32-byte
    hashes, at most 63 of them, a blank line); the note is parsed by whoever
    verifies it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointFormatError("request body is not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise CheckpointFormatError("request body has no blank line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
        raise CheckpointFormatError(f"first line must be 'old <decimal size>', got {first[:40]!r}")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise CheckpointFormatError(f"{len(proof_lines)} consistency proof lines, more than {MAX_PROOF_LINES}")
    proof = []
    for number, line in enumerate(proof_lines, start=1):
        digest = _decode_base64(line, f"consistency proof line {number}")
        if len(digest) != 32:
            raise CheckpointFormatError(f"consistency proof line {number} is not a 32-byte hash")
        proof.append(digest)
    return AddCheckpointRequest(int(first[4:]), tuple(proof), note)
