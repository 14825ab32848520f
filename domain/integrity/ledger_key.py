"""The ledger's own signing keys: the genesis key and every rotation.

The keyring is one aggregate with a fixed id. Its first event names the genesis
public key and is signed by it; each rotation names the next key and is signed by
the key it replaces, so a verifier that trusts any key of the chain can follow
it, and old signatures stay verifiable by key id.
"""

from __future__ import annotations

import uuid

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import KeyAlreadyInKeyring

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

    @staticmethod
    def create_id(**_: object) -> uuid.UUID:
        """There is one keyring per ledger."""
        return KEYRING_ID

    @event(Established)
    def __init__(self, key_id: str, public_key_pem: str, actor: str) -> None:
        self.current_key_id = key_id
        self.keys: dict[str, str] = {key_id: public_key_pem}

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
