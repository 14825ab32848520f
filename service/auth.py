"""API keys: issuing (the secret is shown once), authenticating, bootstrapping
the first admin. Only SHA-256 digests of keys are ever recorded."""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

from domain.credentials import TOKEN_PREFIX, ApiKey, api_key_id, key_digest
from domain.errors import Forbidden, NotFound, Unauthenticated
from domain.permissions import Action, allowed
from domain.principal import Principal
from domain.series import series_id
from service.ledger import Ledger

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


def authenticate(ledger: Ledger, token: str | None) -> Caller:
    """The active principal owning ``token``, or :class:`Unauthenticated`."""
    if not token or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise Unauthenticated("a valid API key is required (Authorization: Bearer <key>)")
    digest = key_digest(token)
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
    return Caller(id=str(principal.id), name=principal.name, roles=list(principal.roles))


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


__all__ = ["BOOTSTRAP_ADMIN_ID", "Caller", "authenticate", "bootstrap_admin", "new_token"]
