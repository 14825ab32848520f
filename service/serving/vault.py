"""The subject key vault: one AES-256-GCM key per data subject, for crypto-shredding.

Keys live in the ``subject_keys`` table, each wrapped (AES-GCM) by the
service's key-encryption key, a file created with mode 0600 beside the ledger
key. The ledger records only a key's id (``Subject.KeyIssued``). Erasure deletes
the row: from then on the subject's recorded inputs are ciphertext that nobody
can read, while the events that hold them keep their hashes and signatures.

Keys are cached in memory for a couple of seconds so a busy subject does not
cost a query per prediction; erasure drops the cache entry in this process, and
another process stops using its copy within that time.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine

from domain.errors import LedgerError
from service.common.private_files import replace_private
from service.store.tables import subject_keys

KEK_FILE = "subject-kek.bin"
NONCE_BYTES = 12
CACHE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A data subject's key: its id (recorded in events), the key itself, and whether this call issued it."""

    key_id: str
    key: bytes
    issued_now: bool = False


class KeyDestroyed(LedgerError):
    """The subject's key was destroyed (erased): the data cannot be read."""

    title = "Erased"


def _load_or_create_kek(keys_dir: Path) -> bytes:
    path = keys_dir / KEK_FILE
    if not path.exists():
        replace_private(path, AESGCM.generate_key(bit_length=256))
    data = path.read_bytes()
    if len(data) != 32:
        raise LedgerError(f"the subject key-encryption key {path} is not 32 bytes", field="kek")
    return data


class SubjectVault:
    """Issues, finds and destroys per-subject keys; encrypts and decrypts inputs."""

    def __init__(self, engine: Engine, keys_dir: Path) -> None:
        self._engine = engine
        self._kek = AESGCM(_load_or_create_kek(keys_dir))
        self._cache: dict[str, tuple[float, SubjectKey]] = {}  # subject -> (when read, key)
        self._lock = threading.Lock()

    # -- keys ----------------------------------------------------------------
    def key_of(self, subject_id: str) -> SubjectKey | None:
        """The subject's key, or None when none was issued or it was destroyed."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(subject_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(subject_keys.c.key_id, subject_keys.c.wrapped_key).where(
                    subject_keys.c.subject_id == subject_id
                )
            ).first()
        if row is None:
            with self._lock:
                self._cache.pop(subject_id, None)
            return None
        key = self._unwrap(row.key_id, row.wrapped_key)
        with self._lock:
            self._cache[subject_id] = (now, SubjectKey(row.key_id, key))
        return SubjectKey(row.key_id, key)

    def issue(self, subject_id: str) -> SubjectKey:
        """The subject's key, created if there is none (then ``issued_now``).

        The unique subject column makes exactly one of several concurrent
        issuers win; the others read the winner's key.
        """
        found = self.key_of(subject_id)
        if found is not None:
            return found
        key_id = uuid.uuid4().hex
        key = AESGCM.generate_key(bit_length=256)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    subject_keys.insert().values(
                        key_id=key_id, subject_id=subject_id, wrapped_key=self._wrap(key_id, key)
                    )
                )
        except sa.exc.IntegrityError:
            found = self.key_of(subject_id)
            if found is None:
                raise LedgerError(f"the key of subject {subject_id} vanished while being issued") from None
            return found
        with self._lock:
            self._cache[subject_id] = (time.monotonic(), SubjectKey(key_id, key))
        return SubjectKey(key_id, key, issued_now=True)

    def destroy(self, subject_id: str) -> bool:
        """Delete the subject's key for good; True when there was one."""
        with self._engine.begin() as conn:
            deleted = conn.execute(subject_keys.delete().where(subject_keys.c.subject_id == subject_id)).rowcount
        with self._lock:
            self._cache.pop(subject_id, None)
        return bool(deleted)

    def key_by_id(self, key_id: str) -> bytes | None:
        """A key by its id (for reading a recorded input), or None once destroyed.

        Never cached: once any process erased the subject, no process reads their inputs.
        """
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(subject_keys.c.wrapped_key).where(subject_keys.c.key_id == key_id)).first()
        return None if row is None else self._unwrap(key_id, row.wrapped_key)

    def _wrap(self, key_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._kek.encrypt(nonce, key, key_id.encode())

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise LedgerError(f"subject key {key_id} does not unwrap with this service's key-encryption key") from None

    # -- data ----------------------------------------------------------------
    @staticmethod
    def encrypt(key_id: str, key: bytes, plaintext: bytes) -> str:
        """base64(nonce || AES-GCM ciphertext), bound to the key id."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, key_id.encode())).decode()

    def decrypt(self, key_id: str, ciphertext_b64: str) -> bytes:
        """The plaintext of a recorded input; :class:`KeyDestroyed` once the key is gone."""
        key = self.key_by_id(key_id)
        if key is None:
            raise KeyDestroyed("the data subject was erased: this input can no longer be read", field="input")
        data = base64.b64decode(ciphertext_b64)
        try:
            return AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise LedgerError("a recorded input does not decrypt with its subject's key", field="input") from None

    def recorded_input(self, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Any]]:
        """The input of a ``Prediction.Made`` payload and, for a data subject, the reason-code values.

        The input is None once the subject was erased.
        """
        if payload["input_ciphertext"] is None:
            return dict(payload["input"]), []
        try:
            secret = json.loads(self.decrypt(payload["input_key_id"], payload["input_ciphertext"]))
        except KeyDestroyed:
            return None, []
        return dict(secret["input"]), list(secret.get("reason_values", []))
