"""Principals, their roles, their signing keys and their API keys."""

from __future__ import annotations

from domain.credentials import ApiKey, api_key_id, key_digest
from domain.errors import PrincipalAlreadyExists, VersionConflict
from domain.principal import Principal
from domain.privileged_change import Bootstrap
from domain.roles import Role
from service.application.ledger_core import SYSTEM_ACTOR, LedgerCore, Written


class IdentityCommands(LedgerCore):
    """Commands about who may act."""

    def register_principal(self, name: str, kind: str, roles: list[str], actor: str) -> Written:
        """Register a user or service account."""
        roles = Principal.check_registration(name, kind, roles)
        try:
            return self._written(Principal(name=name, kind=kind, roles=roles, actor=actor))
        except VersionConflict:
            raise PrincipalAlreadyExists(f"a principal named {name!r} already exists", field="name") from None

    def grant_role(self, principal_id: str, role: str, actor: str) -> Written:
        """Grant a role to a principal."""
        principal: Principal = self.get(principal_id, Principal)
        principal.grant_role(role, actor=actor)
        return self._written(principal)

    def revoke_role(self, principal_id: str, role: str, actor: str) -> Written:
        """Revoke a role from a principal."""
        principal: Principal = self.get(principal_id, Principal)
        principal.revoke_role(role, actor=actor)
        return self._written(principal)

    def deactivate_principal(self, principal_id: str, reason: str, actor: str) -> Written:
        """Stop a principal from acting (its keys stop working at once)."""
        principal: Principal = self.get(principal_id, Principal)
        principal.deactivate(reason, actor=actor)
        return self._written(principal)

    def register_signing_key(
        self, principal_id: str, public_key_pem: str, proof: str, actor: str
    ) -> tuple[str, Written]:
        """Register the actor's own public signing key, with its proof of possession; return its key id."""
        principal: Principal = self.get(principal_id, Principal)
        kid = principal.register_signing_key(public_key_pem, proof, actor=actor)
        return kid, self._written(principal)

    def revoke_signing_key(self, principal_id: str, key_id: str, reason: str, actor: str) -> Written:
        """Revoke a principal's signing key: statements it signs are refused from now on."""
        principal: Principal = self.get(principal_id, Principal)
        principal.revoke_signing_key(key_id, reason, actor=actor)
        return self._written(principal)

    def issue_api_key(self, principal_id: str, token: str, label: str, actor: str) -> Written:
        """Record the digest of a new API key of a principal."""
        principal: Principal = self.get(principal_id, Principal)
        return self._written(ApiKey.issue(principal, key_digest(token), label, actor=actor))

    def revoke_api_key(self, key_id: str, reason: str, actor: str) -> Written:
        """Revoke an API key by its id."""
        key: ApiKey = self.get(key_id, ApiKey)
        key.revoke(reason, actor=actor)
        return self._written(key)

    def api_key_of(self, token: str) -> ApiKey:
        """The key aggregate of a presented token."""
        key: ApiKey = self.get(api_key_id(key_digest(token)), ApiKey)
        return key

    def bootstrap_admin(self, digest: str) -> Written:
        """The first admin principal (named ``admin``), its first key and the open bootstrap, in one transaction."""
        admin = Principal(name="admin", kind="user", roles=[Role.ADMIN.value], actor=SYSTEM_ACTOR)
        key = ApiKey(principal_id=str(admin.id), digest=digest, label="bootstrap admin", actor=SYSTEM_ACTOR)
        bootstrap = Bootstrap(admin_id=str(admin.id), actor=SYSTEM_ACTOR)  # it acts alone until it closes
        return self._written_all(admin, key, bootstrap)
