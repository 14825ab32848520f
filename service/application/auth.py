"""API keys: issuing (the secret is shown once), authenticating, bootstrapping
the first admin. Only SHA-256 digests of keys are ever recorded."""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
import weakref
from dataclasses import dataclass

from domain.credentials import TOKEN_PREFIX, ApiKey, api_key_id, key_digest
from domain.errors import Forbidden, NotFound, Unauthenticated
from domain.permissions import Action, allowed
from domain.principal import Principal
from domain.statistics.series import series_id
from service.application.ledger import Ledger
from service.common.bounded_cache import BoundedCache
from service.common.freshness import Remembered
from service.common.group_call import GroupCall

log = logging.getLogger(__name__)
BOOTSTRAP_ADMIN_ID = series_id("principal", "admin")
MIN_TOKEN_LENGTH = 24
MAX_TOKEN_LENGTH = 512


def new_token() -> str:
    """A fresh API key: ``mll_`` and 43 URL-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request."""

    id: str
    name: str
    roles: list[str]

    @property
    def actor(self) -> str:
        """How events name this caller."""
        return self.id

    def require(self, action: Action) -> None:
        """Raise :class:`Forbidden` unless a role of the caller allows ``action``."""
        if not allowed(action, self.roles):
            raise Forbidden(f"{action.value} needs one of the roles allowed for it; you have {self.roles or 'none'}")


@dataclass(frozen=True)
class _Known:
    """An authentication this process made, valid while neither aggregate has a newer event."""

    key_id: uuid.UUID
    key_version: int
    principal_id: uuid.UUID
    principal_version: int
    caller: Caller

    @property
    def versions(self) -> dict[uuid.UUID, int]:
        """The versions of the key and the principal this authentication read."""
        return {self.key_id: self.key_version, self.principal_id: self.principal_version}


_KNOWN_LIMIT = 10_000
_KNOWN: weakref.WeakKeyDictionary[Ledger, BoundedCache[str, _Known]] = weakref.WeakKeyDictionary()
_CHECKS: weakref.WeakKeyDictionary[Ledger, BoundedCache[str, GroupCall[_Known, bool]]] = weakref.WeakKeyDictionary()


def _unchanged(ledger: Ledger, known: _Known) -> bool:
    """Neither the key nor its principal has an event after the ones authenticated (any process)."""
    return not ledger.has_newer(known.versions)


def _still_valid(ledger: Ledger, digest: str, known: _Known) -> bool:
    """:func:`_unchanged`, shared by the concurrent requests of one key (one look-up after all of them arrived)."""
    checks = _CHECKS.get(ledger)
    if checks is None:
        checks = _CHECKS.setdefault(ledger, BoundedCache(_KNOWN_LIMIT))
    check = checks.get(digest)
    if check is None:

        def run(asks: list[_Known]) -> list[bool]:
            answers: dict[int, bool] = {}
            for ask in asks:
                if id(ask) not in answers:
                    answers[id(ask)] = _unchanged(ledger, ask)
            return [answers[id(ask)] for ask in asks]

        check = checks.setdefault(digest, GroupCall(run))
    return check(known)


def authenticate(ledger: Ledger, token: str | None) -> Caller:
    """The active principal owning ``token``, or :class:`Unauthenticated`.

    A key this process authenticated before is answered from memory after one
    indexed look-up per aggregate shows no newer event, so a revocation, a
    deactivation or a role change recorded by any process applies at once.
    Concurrent requests with the same key share that look-up; it starts after
    each of them arrived, so none is answered from an older state.
    """
    return authenticate_digest(ledger, token_digest(token))


def token_digest(token: str | None) -> str:
    """The digest of a presented API key, or :class:`Unauthenticated` when it cannot be one."""
    if not token or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise Unauthenticated("a valid API key is required (Authorization: Bearer <key>)")
    return key_digest(token)


def remembered(ledger: Ledger, digest: str) -> Caller | None:
    """The caller this process last authenticated with this key digest, unchecked for freshness, or None.

    Only a hint (for refusing a request early); :func:`authenticate_digest` decides.
    """
    known_here = _KNOWN.get(ledger)
    known = None if known_here is None else known_here.get(digest)
    return known.caller if known is not None else None


def remembered_versions(ledger: Ledger, digest: str) -> dict[uuid.UUID, int]:
    """The versions of the key and its principal behind what this process remembers of ``digest`` (or none)."""
    known_here = _KNOWN.get(ledger)
    known = None if known_here is None else known_here.get(digest)
    return {} if known is None else known.versions


def authorize_digest(
    ledger: Ledger, digest: str, action: Action, remembered: Remembered = Remembered.UNCHECKED
) -> Caller:
    """:func:`authenticate_digest`, then :class:`Forbidden` unless a role of the caller allows ``action``."""
    caller = authenticate_digest(ledger, digest, remembered)
    caller.require(action)
    return caller


def authenticate_digest(ledger: Ledger, digest: str, remembered: Remembered = Remembered.UNCHECKED) -> Caller:
    """The active principal owning the API key whose digest is ``digest``, or :class:`Unauthenticated`.

    For holders of a key's digest, never the key (the console's sessions); the
    checks and the in-process memory are those of :func:`authenticate`, so a
    revocation, a deactivation or a role change applies here at once too.
    ``Remembered.CURRENT``: the caller found what this process remembers of the
    key current (:func:`remembered_versions`) with a query that started after
    the request arrived; it is not asked again.
    """
    known_here = _KNOWN.get(ledger)
    if known_here is None:
        known_here = _KNOWN.setdefault(ledger, BoundedCache(_KNOWN_LIMIT))
    known = known_here.get(digest)
    if known is not None and (remembered is Remembered.CURRENT or _still_valid(ledger, digest, known)):
        return known.caller
    caller, key, principal = _authenticate(ledger, digest)
    known_here.put(digest, _Known(key.id, key.version, principal.id, principal.version, caller))
    return caller


def _authenticate(ledger: Ledger, digest: str) -> tuple[Caller, ApiKey, Principal]:
    try:
        key: ApiKey = ledger.get(api_key_id(digest), ApiKey)
    except NotFound:
        raise Unauthenticated("unknown or revoked API key") from None
    if key.revoked or not hmac.compare_digest(key.digest, digest):
        raise Unauthenticated("unknown or revoked API key")
    try:
        principal: Principal = ledger.get(key.principal_id, Principal)
    except NotFound:
        raise Unauthenticated("unknown or revoked API key") from None
    if not principal.active:
        raise Unauthenticated("the principal of this API key is deactivated")
    return Caller(id=str(principal.id), name=principal.name, roles=list(principal.roles)), key, principal


def bootstrap_admin(ledger: Ledger, given_token: str | None) -> str | None:
    """Create the first admin and its key on first start; return the key if newly made.

    With ``given_token`` (from ``MLLEDGER_ADMIN_API_KEY``) that key is recorded;
    otherwise a new one is generated and returned so the caller can print it once.
    """
    try:
        ledger.get(BOOTSTRAP_ADMIN_ID, Principal)
        return None
    except NotFound:
        pass
    token = given_token or new_token()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"MLLEDGER_ADMIN_API_KEY must be at least {MIN_TOKEN_LENGTH} characters")
    ledger.bootstrap_admin(key_digest(token))
    return None if given_token else token


__all__ = ["BOOTSTRAP_ADMIN_ID", "Caller", "authenticate", "authenticate_digest", "bootstrap_admin", "new_token"]
