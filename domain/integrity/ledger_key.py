"""The ledger's own signing keys: the genesis key and every rotation.

The keyring is one aggregate with a fixed id. Its first event names the genesis
public key and is signed by it; each rotation names the next key and is signed by
the key it replaces, so a verifier that trusts any key of the chain can follow
it, and old signatures stay verifiable by key id.

Each key signs only inside its window of ledger positions: from the event that
introduced it to the rotation that retired it (that rotation is its last
signature). A retired key whose compromise is recorded (``Revoked``) taints
what it signed after the position given; verification names those events.
"""

from __future__ import annotations

import uuid

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import (
    InvalidPayload,
    KeyAlreadyInKeyring,
    LedgerKeyAlreadyRevoked,
    LedgerKeyNotInKeyring,
    LedgerKeyStillCurrent,
)

KEYRING_ID = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlledger:ledger-keyring")


class LedgerKeyring(LedgerAggregate):
    """The chain of ledger signing keys."""

    class Established(Aggregate.Created, LedgerAggregate.Event):
        """The genesis key of the ledger."""

        TOPIC = "mlledger.keyring.Established.v1"
        key_id: str
        public_key_pem: str

    class Rotated(LedgerAggregate.Event):
        """Signing moved from ``previous_key_id`` to ``key_id``."""

        TOPIC = "mlledger.keyring.Rotated.v1"
        previous_key_id: str
        key_id: str
        public_key_pem: str
        reason: str

    class Revoked(LedgerAggregate.Event):
        """Retired key ``key_id`` is compromised: what it signed after ``compromised_since`` is not trusted."""

        TOPIC = "mlledger.keyring.Revoked.v1"
        key_id: str
        compromised_since: int
        reason: str

    @staticmethod
    def create_id(**_: object) -> uuid.UUID:
        """There is one keyring per ledger."""
        return KEYRING_ID

    @event(Established)
    def __init__(self, key_id: str, public_key_pem: str, actor: str) -> None:
        self.current_key_id = key_id
        self.keys: dict[str, str] = {key_id: public_key_pem}
        self.compromised_since: dict[str, int] = {}

    def rotate(self, key_id: str, public_key_pem: str, reason: str, actor: str) -> None:
        """Move signing to a new key; refuse a key used before."""
        if key_id in self.keys:
            raise KeyAlreadyInKeyring(f"key {key_id} has already been part of the keyring", field="key_id")
        self._rotate(
            previous_key_id=self.current_key_id,
            key_id=key_id,
            public_key_pem=public_key_pem,
            reason=reason,
            actor=actor,
        )

    @event(Rotated)
    def _rotate(self, previous_key_id: str, key_id: str, public_key_pem: str, reason: str, actor: str) -> None:
        self.keys[key_id] = public_key_pem
        self.current_key_id = key_id

    def revoke(self, key_id: str, compromised_since: int, reason: str, actor: str) -> None:
        """Record that a retired key was compromised from a ledger position on."""
        self.check_revocable(key_id, compromised_since)
        self._revoke(key_id=key_id, compromised_since=compromised_since, reason=reason, actor=actor)

    def check_revocable(self, key_id: str, compromised_since: int) -> None:
        """A key of this keyring, retired, not revoked before; a position that is not negative."""
        if key_id not in self.keys:
            raise LedgerKeyNotInKeyring(f"key {key_id} is not a key of this ledger", field="key_id")
        if key_id == self.current_key_id:
            raise LedgerKeyStillCurrent(
                f"key {key_id} is the current ledger key: rotate it first, then revoke it", field="key_id"
            )
        if key_id in self.compromised_since:
            raise LedgerKeyAlreadyRevoked(
                f"key {key_id} was already revoked (compromised since position {self.compromised_since[key_id]})",
                field="key_id",
            )
        if isinstance(compromised_since, bool) or not isinstance(compromised_since, int) or compromised_since < 0:
            raise InvalidPayload(
                "the compromise position must be a ledger position (an integer, 0 or more)", field="compromised_since"
            )

    @event(Revoked)
    def _revoke(self, key_id: str, compromised_since: int, reason: str, actor: str) -> None:
        self.compromised_since[key_id] = compromised_since
