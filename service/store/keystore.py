"""Where the ledger key lives: a key file on disk, or an object in a PKCS#11 token.

The key file is the embedded default: created on first start with mode 0600,
or loaded from a configured path; rotated by writing the new key beside the old
one. With ``MLLEDGER_KEY_URI`` the key is a :class:`~service.common.pkcs11.TokenKey`
and no private key is ever written here; the public half is still published
under ``public/<key id>.pem``.

A rotation to a token key (``mlledger keys rotate --to pkcs11:...``) keeps the
new key's URI, less any ``pin-value``, in ``ledger.next.uri`` until the rotation
is recorded, then in ``ledger.uri``; the retired key file is removed. Processes
that see the rotation take the new key from there, logging in with the PIN of
their own configured URI when the stored one carries no ``pin-source``.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

from domain.integrity.keys import Signer, SigningKey, load_private_key_pem, private_key_pem, public_key_pem
from service.common.pkcs11 import Pkcs11Uri, TokenKey, TokenKeyError, open_token_key, parse_pkcs11_uri
from service.common.private_files import replace_private
from service.settings import Settings

log = logging.getLogger(__name__)

LEDGER_KEY_FILE = "ledger.pem"
TOKEN_URI_FILE = "ledger.uri"  # noqa: S105 - a file name
PENDING_TOKEN_URI_FILE = "ledger.next.uri"  # noqa: S105 - a file name


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


def remove_created(keys_dir: Path, signer: SigningKey) -> None:
    """Remove the key file :func:`load_or_create` just created for ``signer`` (it turned out not to be this
    ledger's key), its public half, and the folders that held only them."""
    ledger_key_path(keys_dir, None).unlink(missing_ok=True)
    public_dir = keys_dir / "public"
    (public_dir / f"{signer.key_id}.pem").unlink(missing_ok=True)
    for folder in (public_dir, keys_dir):
        with contextlib.suppress(OSError):  # not empty: it holds other keys
            folder.rmdir()


def write_public(keys_dir: Path, signer: SigningKey) -> Path:
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


# --------------------------------------------------------------------------
# The ledger key, wherever it lives
# --------------------------------------------------------------------------


def configured_uri(settings: Settings) -> Pkcs11Uri | None:
    """``MLLEDGER_KEY_URI`` parsed, or None when the key is a file."""
    text = settings.key_uri.get_secret_value()
    return parse_pkcs11_uri(text) if text.strip() else None


def stored_uri(path: Path) -> Pkcs11Uri | None:
    """The token key URI a rotation stored at ``path``, or None when there is none."""
    if not path.exists():
        return None
    return parse_pkcs11_uri(path.read_text().strip())


def open_uri(settings: Settings, uri: Pkcs11Uri) -> TokenKey:
    """The token key ``uri`` names, logging in with the configured URI's PIN and module when it names none."""
    return open_token_key(uri.with_login_of(configured_uri(settings)), settings.pkcs11_module)


def open_ledger_key(settings: Settings) -> tuple[SigningKey, bool]:
    """The configured ledger key and whether it was created now (only a key file is ever created).

    ``MLLEDGER_KEY_URI`` names a key in a token; otherwise a token key that a
    rotation moved the ledger to (``ledger.uri``) is used, else the key file.
    """
    uri = configured_uri(settings)
    if uri is not None:
        key = open_token_key(uri, settings.pkcs11_module)
        write_public(settings.keys_dir, key)
        return key, False
    moved = stored_uri(settings.keys_dir / TOKEN_URI_FILE)
    if moved is not None and not ledger_key_path(settings.keys_dir, settings.key_path).exists():
        if not moved.has_pin:
            raise KeyFileError(
                f"the ledger key was moved into a PKCS#11 token ({moved.redacted()}): "
                "set MLLEDGER_KEY_URI to that URI with its PIN (pin-value=... or pin-source=file:...)"
            )
        return open_uri(settings, moved), False
    return load_or_create(settings.keys_dir, settings.key_path)


def _candidates(settings: Settings) -> Iterator[tuple[str, SigningKey]]:
    """Every key this process could sign with, by where it came from (those that do not open are skipped)."""
    keys_dir = settings.keys_dir
    uris: list[tuple[str, Pkcs11Uri | None]] = [
        ("configured", configured_uri(settings)),
        (TOKEN_URI_FILE, stored_uri(keys_dir / TOKEN_URI_FILE)),
        (PENDING_TOKEN_URI_FILE, stored_uri(keys_dir / PENDING_TOKEN_URI_FILE)),
    ]
    for name, uri in uris:
        if uri is None:
            continue
        try:
            yield name, open_uri(settings, uri)
        except TokenKeyError as exc:
            log.warning("cannot open the token key of %s: %s", name, exc)
    for path in (ledger_key_path(keys_dir, settings.key_path), pending_key_path(keys_dir, settings.key_path)):
        try:
            if path.exists():
                yield path.name, load_or_create(path.parent, path)[0]
        except KeyFileError as exc:
            log.warning("cannot read %s: %s", path, exc)


def find_key(settings: Settings, wanted: str) -> tuple[str, SigningKey] | None:
    """The key with id ``wanted`` among the configured one, the stored token URIs and the key files."""
    return next(((name, key) for name, key in _candidates(settings) if key.key_id == wanted), None)


def make_current(settings: Settings, found: str, key: SigningKey) -> None:
    """Finish a rotation to ``key`` (found as ``found``) that was recorded but not completed on disk."""
    keys_dir = settings.keys_dir
    if found == PENDING_TOKEN_URI_FILE:
        (keys_dir / PENDING_TOKEN_URI_FILE).replace(keys_dir / TOKEN_URI_FILE)
        ledger_key_path(keys_dir, settings.key_path).unlink(missing_ok=True)
    elif found == pending_key_path(keys_dir, settings.key_path).name and isinstance(key, Signer):
        replace_current(keys_dir, settings.key_path, key)
        pending_key_path(keys_dir, settings.key_path).unlink()
    write_public(keys_dir, key)


def stage_token_rotation(settings: Settings, uri: Pkcs11Uri) -> None:
    """Before a rotation to a token key is recorded: keep its URI (never a ``pin-value``) as pending."""
    replace_private(settings.keys_dir / PENDING_TOKEN_URI_FILE, (uri.without_pin_value().text() + "\n").encode())


def unstage_token_rotation(settings: Settings) -> None:
    """A rotation to a token key that was refused: forget its pending URI."""
    (settings.keys_dir / PENDING_TOKEN_URI_FILE).unlink(missing_ok=True)


def finish_token_rotation(settings: Settings, key: TokenKey) -> None:
    """After the rotation is recorded: the token key is current; the retired key file is removed."""
    make_current(settings, PENDING_TOKEN_URI_FILE, key)
