"""A witness's durable state: its Ed25519 key and, per log origin, the latest checkpoint it cosigned.

Both live in the witness's state directory. The key is created once, mode 0600,
and never rewritten. The state is one JSON file replaced atomically (write a
temporary file, fsync it, rename it over the old one, fsync the directory), so a
witness killed at any instant restarts with either the old or the new state,
never a torn one and never an older size than it answered with.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.integrity.cosignature import cosigner_vkey
from domain.integrity.keys import NoteSigner, load_private_key_pem, private_key_pem, raw_public_key
from domain.integrity.witness import LogView
from service.common.private_files import replace_private

KEY_FILE = "witness.key"
NAME_FILE = "witness.name"
STATE_FILE = "state.json"


class WitnessStateError(ValueError):
    """The state directory holds something the witness cannot use."""


@dataclass(frozen=True)
class WitnessIdentity:
    """The witness's name and private key (in memory, or a key in a PKCS#11 token)."""

    name: str
    private_key: NoteSigner

    @property
    def vkey(self) -> str:
        """Its cosigner verifier key, as logs and verifiers configure it."""
        return cosigner_vkey(self.name, raw_public_key(self.private_key.public_key()))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_identity(state_dir: Path, name: str | None) -> WitnessIdentity:
    """The witness key and name in ``state_dir``, created (0600) on first start.

    A ``name`` that differs from the one the key was created with is refused:
    the cosignature key ID commits to the name.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, name_path = state_dir / KEY_FILE, state_dir / NAME_FILE
    if not key_path.exists():
        chosen = name or f"{socket.gethostname()}/witness"
        private_key = Ed25519PrivateKey.generate()
        identity = WitnessIdentity(chosen, private_key)
        identity.vkey  # noqa: B018 - validates the name before anything is written
        _write_new(key_path, private_key_pem(private_key), 0o600)
        name_path.write_text(chosen + "\n")
        return identity
    if key_path.stat().st_mode & 0o077:
        raise WitnessStateError(f"{key_path} is readable by others; chmod 600 it")
    stored = name_path.read_text().strip()
    if name is not None and name != stored:
        raise WitnessStateError(f"this witness's key was created for the name {stored!r}, not {name!r}")
    return WitnessIdentity(stored, load_private_key_pem(key_path.read_bytes()))


def identity_with_key(state_dir: Path, name: str | None, key: NoteSigner) -> WitnessIdentity:
    """The witness identity for a key held elsewhere (a PKCS#11 token): only its name is kept in ``state_dir``.

    A state directory that holds a key file belongs to that key, and is refused.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, name_path = state_dir / KEY_FILE, state_dir / NAME_FILE
    if key_path.exists():
        raise WitnessStateError(f"{key_path} holds this witness's own key; use a new state directory for a token key")
    stored = name_path.read_text().strip() if name_path.exists() else None
    if name is not None and stored is not None and name != stored:
        raise WitnessStateError(f"this witness's state was created for the name {stored!r}, not {name!r}")
    chosen = stored or name or f"{socket.gethostname()}/witness"
    identity = WitnessIdentity(chosen, key)
    identity.vkey  # noqa: B018 - validates the name before anything is written
    if stored is None:
        name_path.write_text(chosen + "\n")
    return identity


@dataclass(frozen=True)
class CosignedCheckpoint:
    """The latest checkpoint cosigned for one origin: size, root and the note with the cosignature."""

    size: int
    root: bytes
    note: str

    @property
    def view(self) -> LogView:
        """What the consistency check compares a new checkpoint with."""
        return LogView(self.size, self.root)


class WitnessState:
    """The per-origin latest cosigned checkpoints, read from and written through to ``state.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.logs: dict[str, CosignedCheckpoint] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.logs = {
                    origin: CosignedCheckpoint(int(v["size"]), base64.b64decode(v["root"]), str(v["note"]))
                    for origin, v in data["logs"].items()
                }
            except (ValueError, KeyError, TypeError) as exc:
                raise WitnessStateError(f"{self.path} is not a witness state file: {exc}") from exc

    def record(self, origin: str, cosigned: CosignedCheckpoint) -> None:
        """Replace ``origin``'s latest checkpoint durably, before the caller answers anyone."""
        logs = {**self.logs, origin: cosigned}
        data = {
            "v": 1,
            "logs": {
                o: {"size": c.size, "root": base64.b64encode(c.root).decode("ascii"), "note": c.note}
                for o, c in sorted(logs.items())
            },
        }
        replace_private(self.path, json.dumps(data, indent=1).encode())
        self.logs = logs
