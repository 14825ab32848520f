"""What a transparency-log witness decides (C2SP tlog-witness ``add-checkpoint``).

A witness remembers, per log origin, the latest checkpoint it cosigned and
cosigns a new one only when the log's key signed it and a consistency proof
shows it extends what the witness saw. :func:`check_add_checkpoint` is that
decision as a pure function; each refusal is its own error, one per status the
spec names (400, 403, 404, 409, 422), so the server maps classes to statuses.

Nothing in this module performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.errors import LedgerError
from domain.integrity import merkle
from domain.integrity.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointSignatureError,
    note_key_hash,
    parse_checkpoint,
    parse_signed_note,
    verify_checkpoint,
)
from domain.integrity.cosignature import AddCheckpointRequest
from domain.integrity.keys import raw_public_key

__all__ = [
    "CheckpointNotTrusted",
    "CheckpointNotWitnessed",
    "InconsistentCheckpoint",
    "LogKey",
    "LogView",
    "MalformedSubmission",
    "OldSizeMismatch",
    "UnknownLog",
    "WitnessRefusal",
    "check_add_checkpoint",
]


class WitnessRefusal(LedgerError):
    """A witness refuses to cosign a submitted checkpoint."""

    title = "Checkpoint refused"


class MalformedSubmission(WitnessRefusal):
    """The request is not an add-checkpoint body, or its old size exceeds the checkpoint's (400)."""

    title = "Malformed submission"


class UnknownLog(WitnessRefusal):
    """The checkpoint's origin is not a log this witness follows (404)."""

    title = "Unknown log"


class CheckpointNotTrusted(WitnessRefusal):
    """No valid signature from a trusted key of the log, or a trusted key's line fails (403)."""

    title = "Checkpoint not signed by the log"


class OldSizeMismatch(WitnessRefusal):
    """The old size is not the size of the latest checkpoint this witness cosigned (409)."""

    title = "Old size mismatch"

    def __init__(self, detail: str, *, latest_size: int) -> None:
        super().__init__(detail, field="old")
        self.latest_size = latest_size


class InconsistentCheckpoint(WitnessRefusal):
    """The checkpoint does not extend what the witness saw: bad proof or a different root (422)."""

    title = "Inconsistent checkpoint"


class CheckpointNotWitnessed(LedgerError):
    """The ledger needs a checkpoint its witness policy's quorum cosigned, and none covers the position yet."""

    title = "Checkpoint not witnessed"


@dataclass(frozen=True)
class LogKey:
    """A log key a witness trusts: the signed-note key name and Ed25519 public key."""

    key_name: str
    public_key: Ed25519PublicKey


@dataclass(frozen=True)
class LogView:
    """The latest checkpoint a witness cosigned for one log."""

    size: int
    root: bytes


def _verify_log_signature(note: str, keys: list[LogKey]) -> None:
    """Pass when a trusted key signed the note and every line of a trusted key verifies."""
    _, lines = parse_signed_note(note)
    signed = False
    for key in keys:
        key_hash = note_key_hash(key.key_name, raw_public_key(key.public_key))
        if not any(line.key_name == key.key_name and line.key_hash == key_hash for line in lines):
            continue  # signatures from unknown keys are ignored
        try:
            verify_checkpoint(note, key.key_name, key.public_key)
        except CheckpointSignatureError as exc:
            raise CheckpointNotTrusted(exc.detail) from exc
        signed = True
    if not signed:
        raise CheckpointNotTrusted("the checkpoint carries no signature from a key trusted for its origin")


def check_add_checkpoint(
    request: AddCheckpointRequest, trusted: dict[str, list[LogKey]], seen: LogView | None
) -> Checkpoint:
    """The checkpoint to cosign, or the refusal the tlog-witness spec names.

    ``trusted`` maps each origin to the keys that may sign its checkpoints;
    ``seen`` is what the witness last cosigned for that origin (``None``: never).
    """
    try:
        checkpoint, _ = parse_checkpoint(request.note)
    except CheckpointFormatError as exc:
        raise MalformedSubmission(exc.detail) from exc
    keys = trusted.get(checkpoint.origin)
    if not keys:
        raise UnknownLog(f"this witness does not follow the log {checkpoint.origin!r}")
    _verify_log_signature(request.note, keys)
    if request.old_size > checkpoint.tree_size:
        raise MalformedSubmission(
            f"old size {request.old_size} exceeds the checkpoint's size {checkpoint.tree_size}", field="old"
        )
    latest = 0 if seen is None else seen.size
    if request.old_size != latest:
        raise OldSizeMismatch(
            f"old size {request.old_size} is not the latest cosigned size {latest}", latest_size=latest
        )
    if checkpoint.tree_size == 0 and checkpoint.root_hash != merkle.EMPTY_ROOT:
        raise InconsistentCheckpoint("a checkpoint of size 0 must carry the root of the empty tree")
    old_root = merkle.EMPTY_ROOT if seen is None else seen.root
    if request.old_size == 0:
        if request.proof:
            raise InconsistentCheckpoint("a consistency proof from size 0 must be empty")
        return checkpoint
    if request.old_size == checkpoint.tree_size:
        if request.proof or checkpoint.root_hash != old_root:
            raise InconsistentCheckpoint(
                f"the checkpoint has size {checkpoint.tree_size} but not the root this witness cosigned at that size"
            )
        return checkpoint
    if not merkle.verify_consistency(
        request.old_size, checkpoint.tree_size, old_root, checkpoint.root_hash, list(request.proof)
    ):
        raise InconsistentCheckpoint(
            f"the consistency proof from size {request.old_size} to {checkpoint.tree_size} does not verify"
        )
    return checkpoint
