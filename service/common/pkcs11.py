"""Ed25519 keys that live in a PKCS#11 token (an HSM; SoftHSM2 in the tests).

A key is named by an RFC 7512 URI (:mod:`service.common.pkcs11_uri`)::

    pkcs11:token=mlledger;object=ledger?pin-source=file:/run/secrets/hsm-pin

The private key never leaves the token: :class:`TokenKey` signs with
``C_Sign`` and ``CKM_EDDSA``; only the public key (``CKA_EC_POINT`` of the
matching public key object) is read out. At open the key signs a probe and the
signature is checked against that public key, so a public object that does not
belong to the private one is refused.

The binding is python-pkcs11, which initializes the module with no locking
arguments (``C_Initialize(NULL)``): the module may then assume one thread at a
time, and SoftHSM2 does, turning its own mutexes off. Every call into a module
therefore holds that module's lock, and keys of one token share one logged-in
session. A process forked from one that used a module (API workers, runners)
initializes it again and opens new sessions before it signs.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.integrity.keys import key_id
from service.common.pkcs11_uri import DEFAULT_MODULE, Pkcs11Uri, TokenKeyError, module_file, parse_pkcs11_uri

__all__ = ["DEFAULT_MODULE", "Pkcs11Uri", "TokenKey", "TokenKeyError", "open_token_key", "parse_pkcs11_uri"]

_ED25519_PARAMS = (
    bytes.fromhex("06032b6570"),  # OID 1.3.101.112 (id-Ed25519), RFC 8410
    b"\x13\x0cedwards25519",  # PrintableString "edwards25519", as pkcs11-tool and SoftHSM2 write it
)
_PROBE = b"mlledger: does the token's private key match its public key?"

T = TypeVar("T")


# --------------------------------------------------------------------------
# Modules: one loaded library per file, its calls serialized
# --------------------------------------------------------------------------


class _Module:
    """A loaded PKCS#11 library, the lock every call into it holds, and its sessions by token."""

    def __init__(self, path: str) -> None:
        import pkcs11

        self.path = path
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.generation = 0
        """Incremented whenever sessions and object handles from before are void (after a fork)."""
        try:
            self.lib: Any = pkcs11.lib(path)
        except Exception as exc:  # pkcs11.PKCS11Error, or a loader failure
            hint = " (Debian: apt-get install softhsm2)" if path == DEFAULT_MODULE else ""
            raise TokenKeyError(f"cannot load the PKCS#11 module {path}: {exc}{hint}") from None
        self.sessions: dict[tuple[tuple[str, str], ...], Any] = {}

    def check_process(self) -> None:
        """In a forked child: initialize the module again; sessions of the parent are not ours."""
        if self.pid != os.getpid():
            self.sessions.clear()
            try:
                self.lib.reinitialize()
            except Exception:  # C_Finalize of the parent's state may complain; C_Initialize is what matters
                self.lib.initialize()
            self.pid = os.getpid()
            self.generation += 1

    def call(self, action: Callable[[], T]) -> T:
        """Run ``action`` (calls into this module) alone."""
        with self.lock:
            self.check_process()
            return action()


_modules: dict[str, _Module] = {}
_modules_lock = threading.Lock()


def _module(path: str) -> _Module:
    with _modules_lock:
        found = _modules.get(path)
        if found is None:
            found = _modules[path] = _Module(path)
        return found


def _after_fork_in_child() -> None:
    # A lock held by another thread at the fork would stay held forever in the child.
    global _modules_lock
    _modules_lock = threading.Lock()
    for module in _modules.values():
        module.lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------


def _raw_ec_point(point: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 ``CKA_EC_POINT``: a DER OCTET STRING, or the bare point."""
    if len(point) == 34 and point[0] == 0x04 and point[1] == 32:
        return point[2:]
    if len(point) == 32:
        return point
    raise TokenKeyError(f"the token's public key is not a 32-byte Ed25519 point ({len(point)} bytes)")


class _NoteKey:
    """A :class:`TokenKey` in the shape signed notes use (``sign`` -> raw bytes, ``public_key()``)."""

    def __init__(self, key: TokenKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign_raw(data)

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key


class TokenKey:
    """An Ed25519 key in a PKCS#11 token: a ``SigningKey`` whose private half never leaves the token."""

    def __init__(self, uri: Pkcs11Uri, default_module: str = DEFAULT_MODULE) -> None:
        self.uri = uri
        self._module = _module(module_file(uri, default_module))
        self._pin = uri.pin()
        self._handle: Any = None
        self._generation = -1
        raw = self._module.call(self._open)
        self._public_key = Ed25519PublicKey.from_public_bytes(raw)
        try:
            self._public_key.verify(self.sign_raw(_PROBE), _PROBE)
        except InvalidSignature:
            raise TokenKeyError(
                f"{self.source}: the private key does not match the public key object beside it"
            ) from None

    @property
    def source(self) -> str:
        """The key's URI without a PIN value."""
        return self.uri.redacted()

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, read from the token's public key object."""
        return self._public_key

    @cached_property
    def key_id(self) -> str:
        """The key id of the public key."""
        return key_id(self._public_key)

    @property
    def parallel(self) -> bool:
        """Calls into the module are serialized: one thread signs at a time."""
        return False

    @cached_property
    def note_key(self) -> _NoteKey:
        """Raw signatures for signed notes (checkpoints, cosignatures)."""
        return _NoteKey(self)

    def sign(self, message: bytes) -> str:
        """``C_Sign(CKM_EDDSA)`` over ``message``; the signature in standard base64."""
        return base64.b64encode(self.sign_raw(message)).decode("ascii")

    def sign_raw(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``, made in the token."""
        return self._module.call(lambda: self._sign(message))

    # -- inside the module lock ----------------------------------------------
    def _sign(self, message: bytes) -> bytes:
        from pkcs11 import Mechanism, exceptions

        for attempt in range(2):
            if self._generation != self._module.generation or self._handle is None:
                self._open()
            try:
                signature = bytes(self._handle.sign(message, mechanism=Mechanism.EDDSA))
            except (
                exceptions.SessionClosed,
                exceptions.SessionHandleInvalid,
                exceptions.UserNotLoggedIn,
                exceptions.ObjectHandleInvalid,
                exceptions.DeviceRemoved,
                exceptions.TokenNotPresent,
            ) as exc:
                # The token was re-inserted or its session dropped: log in again once.
                self._module.sessions.pop(self._token_key(), None)
                self._handle = None
                if attempt:
                    raise TokenKeyError(f"{self.source}: the token cannot sign: {type(exc).__name__}") from None
                continue
            except exceptions.PKCS11Error as exc:
                raise TokenKeyError(f"{self.source}: C_Sign failed: {type(exc).__name__} {exc}".strip()) from None
            if len(signature) != 64:
                raise TokenKeyError(f"{self.source}: the token returned a {len(signature)}-byte signature")
            return signature
        raise AssertionError("unreachable")

    def _token_key(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.uri.path if k not in ("object", "id", "type"))

    def _session(self) -> Any:
        from pkcs11 import exceptions

        module = self._module
        found = module.sessions.get(self._token_key())
        if found is not None:
            return found
        token = self._token()
        try:
            try:
                session = token.open(user_pin=self._pin)
            except exceptions.UserAlreadyLoggedIn:
                session = token.open()
        except (exceptions.PinIncorrect, exceptions.PinInvalid, exceptions.PinLenRange):
            raise TokenKeyError(f"{self.source}: the token refused the PIN") from None
        except exceptions.PinLocked:
            raise TokenKeyError(f"{self.source}: the token's user PIN is locked") from None
        except exceptions.PKCS11Error as exc:
            raise TokenKeyError(f"{self.source}: cannot log in to the token: {type(exc).__name__}") from None
        module.sessions[self._token_key()] = session
        return session

    def _token(self) -> Any:
        uri = self.uri
        wanted_slot = uri.get("slot-id")
        checks: dict[str, Callable[[Any], str]] = {
            "token": lambda t: t.label,
            "serial": lambda t: t.serial.decode("ascii", "replace").strip(),
            "manufacturer": lambda t: t.manufacturer_id,
            "model": lambda t: t.model,
        }
        matches = []
        try:
            slots = self._module.lib.get_slots(token_present=True)
            for slot in slots:
                if wanted_slot is not None and str(slot.slot_id) != wanted_slot:
                    continue
                token = slot.get_token()
                if all(uri.get(name) in (None, get(token).strip()) for name, get in checks.items()):
                    matches.append(token)
        except Exception as exc:
            raise TokenKeyError(f"{self.source}: cannot list the module's tokens: {exc}") from None
        if not matches:
            raise TokenKeyError(f"{self.source}: no such token in {self._module.path}")
        if len(matches) > 1:
            raise TokenKeyError(f"{self.source}: {len(matches)} tokens match; add token= or serial= to the URI")
        return matches[0]

    def _open(self) -> bytes:
        """Find the key pair (under the module lock); the raw public key."""
        from pkcs11 import Attribute, KeyType, ObjectClass, exceptions

        self._module.check_process()
        session = self._session()
        query: dict[Attribute, Any] = {}
        if self.uri.get("object") is not None:
            query[Attribute.LABEL] = self.uri.get("object")
        if self.uri.get("id") is not None:
            query[Attribute.ID] = str(self.uri.get("id")).encode("latin-1")

        def one(kind: Any) -> Any:
            found = list(session.get_objects({Attribute.CLASS: kind, **query}))
            if len(found) > 1:
                raise TokenKeyError(f"{self.source}: {len(found)} objects match; add id= to the URI")
            return found[0] if found else None

        try:
            private, public = one(ObjectClass.PRIVATE_KEY), one(ObjectClass.PUBLIC_KEY)
            if private is None:
                raise TokenKeyError(f"{self.source}: the token has no such private key")
            if private[Attribute.KEY_TYPE] != KeyType.EC_EDWARDS:
                raise TokenKeyError(f"{self.source}: the key is not an EdDSA key (CKK_EC_EDWARDS)")
            if public is None:
                raise TokenKeyError(f"{self.source}: the token has no public key object with the same label and id")
            if bytes(public[Attribute.EC_PARAMS]) not in _ED25519_PARAMS:
                raise TokenKeyError(f"{self.source}: the key is not on edwards25519 (Ed448 is not supported)")
            raw = _raw_ec_point(bytes(public[Attribute.EC_POINT]))
        except exceptions.PKCS11Error as exc:
            raise TokenKeyError(f"{self.source}: cannot read the key: {type(exc).__name__}") from None
        self._handle = private
        self._generation = self._module.generation
        return raw


def open_token_key(uri: str | Pkcs11Uri, default_module: str = DEFAULT_MODULE) -> TokenKey:
    """The Ed25519 key that ``uri`` names, checked to sign and to match its public key."""
    parsed = parse_pkcs11_uri(uri) if isinstance(uri, str) else uri
    return TokenKey(parsed, default_module)
