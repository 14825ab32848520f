"""The ledger key on disk: created on first start with mode 0600, or loaded
from a configured path; rotated by writing the new key beside the old one."""

from __future__ import annotations

import stat
from pathlib import Path

from domain.integrity.keys import Signer, load_private_key_pem, private_key_pem, public_key_pem
from service.common.private_files import replace_private

LEDGER_KEY_FILE = "ledger.pem"


class KeyFileError(Exception):
    """The ledger key file is missing, unreadable or too widely readable."""


def ledger_key_path(keys_dir: Path, key_path: Path | None) -> Path:
    """Where the current ledger key lives."""
    return key_path if key_path is not None else keys_dir / LEDGER_KEY_FILE


def pending_key_path(keys_dir: Path, key_path: Path | None) -> Path:
    """Where a rotation keeps the new key until its event is recorded."""
    return ledger_key_path(keys_dir, key_path).with_suffix(".next.pem")


def write_private(path: Path, signer: Signer) -> None:
    """Write a private key file with mode 0600 (atomically)."""
    replace_private(path, private_key_pem(signer.private_key))


def load_or_create(keys_dir: Path, key_path: Path | None = None) -> tuple[Signer, bool]:
    """Load the ledger key, creating it (0600) when no path was configured.

    Returns the signer and whether it was created now.
    """
    path = ledger_key_path(keys_dir, key_path)
    if not path.exists():
        if key_path is not None:
            raise KeyFileError(f"ledger key file {path} does not exist")
        signer = Signer.generate()
        replace_private(path, private_key_pem(signer.private_key))
        write_public(keys_dir, signer)
        return signer, True
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"ledger key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600 {path})"
        )
    try:
        return Signer(load_private_key_pem(path.read_bytes())), False
    except OSError as exc:
        raise KeyFileError(f"cannot read ledger key file {path}: {exc.strerror}") from None


def write_public(keys_dir: Path, signer: Signer) -> Path:
    """Write the public half as ``public/<key id>.pem`` (world-readable is fine)."""
    public_dir = keys_dir / "public"
    public_dir.mkdir(parents=True, exist_ok=True)
    path = public_dir / f"{signer.key_id}.pem"
    path.write_text(public_key_pem(signer.public_key))
    return path


def replace_current(keys_dir: Path, key_path: Path | None, signer: Signer) -> None:
    """Make ``signer`` the current ledger key on disk (after its rotation is recorded)."""
    path = ledger_key_path(keys_dir, key_path)
    replace_private(path, private_key_pem(signer.private_key))
    write_public(keys_dir, signer)
