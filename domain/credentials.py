"""ApiKey: a bearer credential of a principal, recorded only by its digest.

The aggregate id is derived from the digest, so authenticating a request is one
lookup by id: hash the presented key, load that aggregate, check it is not
revoked and that its principal is active. No projection lag can let a revoked
key in or keep a fresh key out.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import ApiKeyAlreadyRevoked

if TYPE_CHECKING:
    from domain.principal import Principal

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlledger:api-key")
TOKEN_PREFIX = "mll_"  # noqa: S105 - a prefix, not a secret


def key_digest(token: str) -> str:
    """``sha256:<hex>`` of the presented key."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_id(digest: str) -> uuid.UUID:
    """The aggregate id of the key with ``digest``."""
    return uuid.uuid5(NAMESPACE, digest)


class ApiKey(LedgerAggregate):
    """An API key of a principal."""

    class Issued(Aggregate.Created, LedgerAggregate.Event):
        """A key was issued; only its digest is recorded."""

        TOPIC = "mlledger.apikey.Issued.v1"
        principal_id: str
        digest: str
        label: str

    class Revoked(LedgerAggregate.Event):
        """The key authenticates nothing from now on."""

        TOPIC = "mlledger.apikey.Revoked.v1"
        reason: str

    @staticmethod
    def create_id(digest: str, **_: object) -> uuid.UUID:
        """One aggregate per key digest."""
        return api_key_id(digest)

    @event(Issued)
    def __init__(self, principal_id: str, digest: str, label: str, actor: str) -> None:
        self.principal_id = principal_id
        self.digest = digest
        self.label = label
        self.revoked = False

    @classmethod
    def issue(cls, principal: Principal, digest: str, label: str, actor: str) -> ApiKey:
        """A new key of ``principal``, which must be active: a deactivated principal gets no keys."""
        principal.check_active()
        return cls(principal_id=str(principal.id), digest=digest, label=label, actor=actor)

    def revoke(self, reason: str, actor: str) -> None:
        """Revoke the key; refuse twice."""
        if self.revoked:
            raise ApiKeyAlreadyRevoked("the key is already revoked")
        self._revoke(reason=reason, actor=actor)

    @event(Revoked)
    def _revoke(self, reason: str, actor: str) -> None:
        self.revoked = True
