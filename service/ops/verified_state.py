"""What the last successful ``mlledger verify`` established, kept for ``verify --since-checkpoint``.

The state is a small JSON file (mode 0600), by default ``<data dir>/verified.json``
(``mlledger verify --state PATH`` puts it elsewhere): the checkpoint verified
last (its signed note, tree size and root, the notification id of its last
leaf) and the tree's compact range at that size (the O(log n) complete
subtrees that fold into the root). An incremental run trusts it as its
starting point, so it checks the file before it uses it: the note must carry
a valid signature of a ledger key, name the same size and root, and the
compact range must fold into that root; the ledger must still hold that very
checkpoint and the same frontier. A state edited by hand, or a ledger whose
history or checkpoint was rewritten since, fails those checks.

What the file cannot show: someone able to write both it and the ledger, and
holding the ledger key, can make them agree. Keep it where the ledger's
operator cannot write (an auditor's machine, ``--state``); the full
verification never reads it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from domain.errors import LedgerError
from domain.integrity.compact_range import CompactRange
from service.common.private_files import replace_private

STATE_FILE = "verified.json"
FORMAT = 1


class StateUnreadable(LedgerError):
    """The verified state file is missing or is not one this program wrote."""

    title = "Verified state unreadable"


@dataclass(frozen=True)
class VerifiedState:
    """The last verified checkpoint and the tree's frontier at its size."""

    origin: str
    tree_size: int
    root: bytes
    key_id: str
    note: str
    last_notification_id: int
    frontier: CompactRange

    def to_json(self) -> bytes:
        """The file's bytes."""
        return json.dumps(
            {
                "format": FORMAT,
                "origin": self.origin,
                "tree_size": self.tree_size,
                "root": base64.b64encode(self.root).decode(),
                "key_id": self.key_id,
                "note": self.note,
                "last_notification_id": self.last_notification_id,
                "frontier": [[level, index, digest.hex()] for level, index, digest in self.frontier.nodes],
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VerifiedState:
        """Parse the file's bytes (:class:`StateUnreadable` when they are not a state)."""
        try:
            fields = json.loads(data)
            if fields.get("format") != FORMAT:
                raise ValueError(f"unknown format {fields.get('format')!r}")
            size = int(fields["tree_size"])
            nodes = [(int(level), int(index), bytes.fromhex(digest)) for level, index, digest in fields["frontier"]]
            return cls(
                origin=str(fields["origin"]),
                tree_size=size,
                root=base64.b64decode(fields["root"], validate=True),
                key_id=str(fields["key_id"]),
                note=str(fields["note"]),
                last_notification_id=int(fields["last_notification_id"]),
                frontier=CompactRange(size, nodes),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateUnreadable(f"the verified state is not readable: {exc}") from None


def state_path(data_dir: Path, given: Path | None = None) -> Path:
    """Where the state lives: ``given``, else the data directory's ``verified.json``."""
    return given if given is not None else data_dir / STATE_FILE


def load_state(path: Path) -> VerifiedState:
    """Read the state (:class:`StateUnreadable` when it is missing or malformed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateUnreadable(
            f"no verified state at {path} ({exc.strerror}): run a full 'mlledger verify' first"
        ) from None
    return VerifiedState.from_json(data)


def save_state(path: Path, state: VerifiedState) -> None:
    """Write the state atomically, readable by its owner only."""
    replace_private(path, state.to_json())
