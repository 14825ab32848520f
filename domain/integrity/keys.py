"""Ed25519 keys of the ledger and of people: key ids, PEM encoding, signing.

A key id is the first 16 hex digits of sha256 of the raw 32-byte public key, so
any holder of the public key can recompute it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from domain.errors import LedgerError


class InvalidKey(LedgerError):
    """Key material that is not a usable Ed25519 key."""

    title = "Invalid key"


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256(raw public key)."""
    return hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM text."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def load_public_key_pem(text: str | bytes) -> Ed25519PublicKey:
    """Parse PEM text into an Ed25519 public key, or raise :class:`InvalidKey`."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"not a PEM public key: {exc}", field="public_key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidKey("the public key is not an Ed25519 key", field="public_key")
    return key


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM bytes (for a 0600 file)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    """Parse PKCS#8 PEM bytes into an Ed25519 private key, or raise :class:`InvalidKey`."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKey("the private key is not an Ed25519 key")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    """True when ``signature_b64`` is a valid Ed25519 signature of ``message``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_raw(raw_public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Fast Ed25519 check (libsodium) for bulk verification; True when valid."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, raw_public_key)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


class NoteSigner(Protocol):
    """What signs a signed note (a checkpoint, a cosignature): raw Ed25519 signatures.

    :class:`Ed25519PrivateKey` has this shape; so has :attr:`SigningKey.note_key`
    of a key that lives in a PKCS#11 token.
    """

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        ...

    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        ...


class SigningKey(Protocol):
    """The ledger's signing key, wherever its private half lives.

    Two implementations: :class:`Signer`, a key held in this process's memory
    (the key file), and ``service.common.pkcs11.TokenKey``, a key that never
    leaves a PKCS#11 token and signs with ``C_Sign(CKM_EDDSA)``. Ed25519 is
    deterministic, so both sign the same bytes the same way.
    """

    @property
    def key_id(self) -> str:
        """The key id of the public key."""
        ...

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        ...

    @property
    def parallel(self) -> bool:
        """Whether signing from several threads at once is faster than from one."""
        ...

    @property
    def note_key(self) -> NoteSigner:
        """The key as signed notes (checkpoints) use it: raw signatures."""
        ...

    @property
    def source(self) -> str:
        """Where the private half lives, in words for messages (never a PIN)."""
        ...

    def sign(self, message: bytes) -> str:
        """Sign ``message``; the signature in standard base64."""
        ...


@dataclass(frozen=True)
class Signer:
    """A private key in memory with its key id: a :class:`SigningKey` (the key file's), and people's keys."""

    private_key: Ed25519PrivateKey

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self.private_key.public_key()

    @cached_property
    def key_id(self) -> str:
        """The key id of the public key."""
        return key_id(self.public_key)

    @cached_property
    def _sodium_secret(self) -> bytes:
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return seed + raw_public_key(self.public_key)

    def sign(self, message: bytes) -> str:
        """Sign ``message``; return the signature in standard base64.

        libsodium signs about 25% faster than OpenSSL here; Ed25519 is
        deterministic, so the signature is the same byte for byte.
        """
        signed = nacl.bindings.crypto_sign(message, self._sodium_secret)
        return base64.b64encode(signed[:64]).decode("ascii")

    @property
    def parallel(self) -> bool:
        """libsodium releases the GIL: threads sign in parallel."""
        return True

    @property
    def note_key(self) -> Ed25519PrivateKey:
        """The private key itself signs notes."""
        return self.private_key

    @property
    def source(self) -> str:
        """A key held in memory (loaded from the key file)."""
        return "key file"

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh random key."""
        return cls(Ed25519PrivateKey.generate())
