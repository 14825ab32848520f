"""Principal: a user or service account, its roles and its signing keys.

A signing key is registered by its owner only, with proof of possession: the
owner signs, with the private key, the canonical JSON of a statement naming
their principal id and the key's id (:func:`possession_statement`). So nobody,
an admin included, can register a key for someone else and sign in their name.
A key can be revoked; statements signed with a revoked key are refused.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import (
    InvalidPayload,
    PossessionNotProven,
    PrincipalDeactivated,
    RevokedSigningKey,
    RoleAlreadyHeld,
    RoleNotHeld,
    SigningKeyAlreadyRegistered,
    SigningKeyAlreadyRevoked,
    SigningKeyNotOwn,
    SigningKeyNotRegistered,
)
from domain.integrity.canonical import canonical_json
from domain.integrity.keys import key_id, load_public_key_pem, verify_signature
from domain.roles import Role
from domain.statistics.series import check_name, series_id

PRINCIPAL_KINDS = ("user", "service")
POSSESSION_TYPE = "mlledger.signing-key-possession.v1"


def possession_statement(principal_id: str, key_id: str) -> dict[str, Any]:
    """What a principal signs, with the private key, to register its public key as theirs."""
    return {"type": POSSESSION_TYPE, "principal_id": principal_id, "key_id": key_id}


def possession_message(principal_id: str, key_id: str) -> bytes:
    """The exact bytes of the proof of possession: the statement's canonical JSON."""
    return canonical_json(possession_statement(principal_id, key_id), path="statement")


def check_roles(roles: list[str]) -> list[str]:
    """Return the roles sorted and de-duplicated, or raise naming the unknown one."""
    known = {r.value for r in Role}
    for role in roles:
        if role not in known:
            raise InvalidPayload(f"unknown role {role!r}; roles are {', '.join(sorted(known))}", field="roles")
    return sorted(set(roles))


class Principal(LedgerAggregate):
    """A user or service account known to the ledger."""

    class Registered(Aggregate.Created, LedgerAggregate.Event):
        """A principal was registered with a name, a kind and initial roles."""

        TOPIC = "mlledger.principal.Registered.v1"
        name: str
        kind: str
        roles: list[str]

    class RoleGranted(LedgerAggregate.Event):
        """A role was granted."""

        TOPIC = "mlledger.principal.RoleGranted.v1"
        role: str

    class RoleRevoked(LedgerAggregate.Event):
        """A role was revoked."""

        TOPIC = "mlledger.principal.RoleRevoked.v1"
        role: str

    class SigningKeyRegistered(LedgerAggregate.Event):
        """A public Ed25519 key the principal signs statements with."""

        TOPIC = "mlledger.principal.SigningKeyRegistered.v1"
        key_id: str
        public_key_pem: str

    class SigningKeyPossessionProven(LedgerAggregate.Event):
        """The owner proved they hold the private key: ``proof`` is its signature of
        :func:`possession_statement` (recorded just before the key's registration)."""

        TOPIC = "mlledger.principal.SigningKeyPossessionProven.v1"
        key_id: str
        statement: dict[str, Any]
        proof: str

    class SigningKeyRevoked(LedgerAggregate.Event):
        """The key signs nothing from now on (what it signed before stays on record)."""

        TOPIC = "mlledger.principal.SigningKeyRevoked.v1"
        key_id: str
        reason: str

    class Deactivated(LedgerAggregate.Event):
        """The principal may no longer act (keys stop working, roles stay on record)."""

        TOPIC = "mlledger.principal.Deactivated.v1"
        reason: str

    @staticmethod
    def create_id(name: str, **_: object) -> uuid.UUID:
        """Principal names are unique: the id derives from the name."""
        return series_id("principal", name)

    @event(Registered)
    def __init__(self, name: str, kind: str, roles: list[str], actor: str) -> None:
        self.name = name
        self.kind = kind
        self.roles = list(roles)
        self.signing_keys: dict[str, str] = {}
        self.revoked_signing_keys: set[str] = set()
        self.active = True

    def has_role(self, *roles: str) -> bool:
        """True when the principal is active and holds any of ``roles``."""
        return self.active and any(role in self.roles for role in roles)

    def check_active(self) -> None:
        """A deactivated principal may no longer act: it gets no new API keys."""
        if not self.active:
            raise PrincipalDeactivated(f"{self.name} is deactivated")

    def signing_key(self, key_id: str) -> str:
        """The public key (PEM) the principal registered as ``key_id``, unless it was revoked."""
        public_key_pem = self.signing_keys.get(key_id)
        if public_key_pem is None:
            raise SigningKeyNotRegistered(
                f"{self.name} has no registered signing key {key_id}; register it first", field="key_id"
            )
        if key_id in self.revoked_signing_keys:
            raise RevokedSigningKey(
                f"{self.name}'s signing key {key_id} was revoked; sign with a key that is still registered",
                field="key_id",
            )
        return public_key_pem

    def deactivate(self, reason: str, actor: str) -> None:
        """Stop the principal from acting."""
        if not self.active:
            raise PrincipalDeactivated(f"{self.name} is already deactivated")
        self._deactivate(reason=reason, actor=actor)

    @event(Deactivated)
    def _deactivate(self, reason: str, actor: str) -> None:
        self.active = False

    @staticmethod
    def check_registration(name: str, kind: str, roles: list[str]) -> list[str]:
        """Validate a registration; return the normalized roles."""
        check_name(name)
        if kind not in PRINCIPAL_KINDS:
            raise InvalidPayload(f"kind must be one of {', '.join(PRINCIPAL_KINDS)}, not {kind!r}", field="kind")
        return check_roles(roles)

    def grant_role(self, role: str, actor: str) -> None:
        """Grant ``role``; refuse one already held."""
        check_roles([role])
        if role in self.roles:
            raise RoleAlreadyHeld(f"{self.name} already holds the role {role!r}", field="role")
        self._grant_role(role=role, actor=actor)

    @event(RoleGranted)
    def _grant_role(self, role: str, actor: str) -> None:
        self.roles = sorted({*self.roles, role})

    def revoke_role(self, role: str, actor: str) -> None:
        """Revoke ``role``; refuse one not held."""
        if role not in self.roles:
            raise RoleNotHeld(f"{self.name} does not hold the role {role!r}", field="role")
        self._revoke_role(role=role, actor=actor)

    @event(RoleRevoked)
    def _revoke_role(self, role: str, actor: str) -> None:
        self.roles = [r for r in self.roles if r != role]

    def register_signing_key(self, public_key_pem: str, proof: str, actor: str) -> str:
        """Register the actor's own public signing key, proven by ``proof``; return its key id.

        Only the principal itself registers its keys (``actor`` is its id), and
        ``proof`` must be the key's signature of :func:`possession_statement`.
        """
        public_key = load_public_key_pem(public_key_pem)
        kid = key_id(public_key)
        if actor != str(self.id):
            raise SigningKeyNotOwn(
                f"a signing key is registered by its owner only: {self.name} must register it, with proof "
                "of possession",
                field="principal_id",
            )
        if not isinstance(proof, str) or not verify_signature(public_key, proof, possession_message(actor, kid)):
            raise PossessionNotProven(
                f"the proof is not the key's signature of the possession statement for {self.name} and key {kid}",
                field="proof",
            )
        if kid in self.signing_keys:
            raise SigningKeyAlreadyRegistered(f"key {kid} is already registered", field="public_key_pem")
        self._prove_possession(key_id=kid, statement=possession_statement(actor, kid), proof=proof, actor=actor)
        self._register_signing_key(key_id=kid, public_key_pem=public_key_pem, actor=actor)
        return kid

    @event(SigningKeyPossessionProven)
    def _prove_possession(self, key_id: str, statement: dict[str, Any], proof: str, actor: str) -> None:
        pass

    @event(SigningKeyRegistered)
    def _register_signing_key(self, key_id: str, public_key_pem: str, actor: str) -> None:
        self.signing_keys[key_id] = public_key_pem

    def revoke_signing_key(self, key_id: str, reason: str, actor: str) -> None:
        """Revoke a registered key: statements it signs from now on are refused."""
        if key_id not in self.signing_keys:
            raise SigningKeyNotRegistered(f"{self.name} has no registered signing key {key_id}", field="key_id")
        if key_id in self.revoked_signing_keys:
            raise SigningKeyAlreadyRevoked(f"{self.name}'s signing key {key_id} is already revoked", field="key_id")
        self._revoke_signing_key(key_id=key_id, reason=reason, actor=actor)

    @event(SigningKeyRevoked)
    def _revoke_signing_key(self, key_id: str, reason: str, actor: str) -> None:
        self.revoked_signing_keys.add(key_id)
