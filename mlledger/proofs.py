"""Checking, on the client, that a write is in the ledger's transparency log.

The client holds three things from the service: the receipt of its write (the
sealed event: envelope, hash, the ledger's signature), an inclusion proof of
that event's leaf, and the signed checkpoint the proof leads to. With the
ledger's public key alone it checks that the envelope hashes to the receipt's
hash, that the ledger signed that hash, that the leaf is that hash's leaf, that
the audit path leads to the proof's root, and that the ledger signed a
checkpoint of that root and size. Any mismatch raises
:class:`InclusionCheckFailed`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.integrity import merkle
from domain.integrity.canonical import canonical_json
from domain.integrity.checkpoint import CheckpointError, parse_signed_note, verify_checkpoint
from domain.integrity.keys import key_id
from mlledger.errors import InclusionCheckFailed
from mlledger.results import InclusionVerified, Written


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise InclusionCheckFailed(f"the {what} is not hex") from None


def check_inclusion(
    written: Written, receipt: dict[str, Any], proof: dict[str, Any], ledger_key: Ed25519PublicKey
) -> InclusionVerified:
    """Verify that ``written`` is logged, from its receipt and inclusion proof, with the ledger's key."""
    envelope = receipt.get("envelope")
    if receipt.get("notification_id") != written.position or proof.get("notification_id") != written.position:
        raise InclusionCheckFailed(f"the receipt or proof is not of position {written.position}")
    if not isinstance(envelope, dict) or envelope.get("aggregate_id") != written.id:
        raise InclusionCheckFailed(f"the event at position {written.position} is not one of record {written.id}")
    event_hash = hashlib.sha256(canonical_json(envelope, path="")).digest()
    if event_hash != _hex(receipt.get("hash"), "event hash"):
        raise InclusionCheckFailed("the event's envelope does not hash to the receipt's hash")
    if receipt.get("key_id") != key_id(ledger_key):
        raise InclusionCheckFailed(f"the event was sealed by key {receipt.get('key_id')}, not the ledger key given")
    try:
        ledger_key.verify(base64.b64decode(str(receipt.get("signature")), validate=True), event_hash)
    except (InvalidSignature, binascii.Error, ValueError):
        raise InclusionCheckFailed("the ledger's signature of the event does not verify") from None
    leaf = merkle.leaf_hash(event_hash)
    if leaf != _hex(proof.get("leaf_hash"), "leaf hash"):
        raise InclusionCheckFailed("the proof is of another leaf")
    root = _hex(proof.get("root_hash"), "root hash")
    index, size = proof.get("leaf_index"), proof.get("tree_size")
    path = [_hex(node, "proof node") for node in proof.get("proof", [])]
    if (
        not isinstance(index, int)
        or not isinstance(size, int)
        or not merkle.verify_inclusion(leaf, index, size, path, root)
    ):
        raise InclusionCheckFailed("the audit path does not lead from the event's leaf to the root")
    note = proof.get("checkpoint")
    if not isinstance(note, str):
        raise InclusionCheckFailed("no signed checkpoint covers the event yet")
    try:
        origin = parse_signed_note(note)[0].split("\n", 1)[0]
        checkpoint = verify_checkpoint(note, origin, ledger_key)
    except CheckpointError as exc:
        raise InclusionCheckFailed(f"the checkpoint does not verify: {exc}") from None
    if (checkpoint.tree_size, checkpoint.root_hash) != (size, root):
        raise InclusionCheckFailed("the signed checkpoint is of another tree than the proof")
    return InclusionVerified(written.position, event_hash.hex(), index, size, root.hex(), origin)
