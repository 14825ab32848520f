"""Privileged changes that principals ask for through the API: proposed by one
admin, applied when a different admin confirms (``domain.privileged_change``).

These are the entry points the API uses for granting roles, issuing API keys
and changing a model's policy. The plain commands of ``identity`` and
``governance`` stay for the ledger's own process (bootstrap, the demo, tests
that arrange a world), which holds the ledger key and is outside four-eyes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.approval import ApprovalPolicy
from domain.credentials import ApiKey, key_digest
from domain.errors import ConfirmationRequired, InvalidPayload, NotFound
from domain.model import Model
from domain.principal import Principal
from domain.privileged_change import (
    CHANGE_POLICY,
    GRANT_ROLE,
    ISSUE_API_KEY,
    Bootstrap,
    PrivilegedChange,
    closes_bootstrap,
    is_privileged_role,
)
from service.application.ledger_core import LedgerCore, Written


@dataclass(frozen=True)
class Outcome:
    """What a privileged request did: applied at once (``pending`` False), or proposed.

    ``id`` is the changed aggregate's id when applied, the proposal's id when
    pending; ``api_key`` is the new key when one was issued by this call.
    """

    id: str
    position: int
    pending: bool
    api_key: str | None = None


class FourEyesCommands(LedgerCore):
    """Privileged changes: applied alone only in the bootstrap, otherwise proposed and confirmed."""

    def bootstrap(self) -> Bootstrap | None:
        """The ledger's bootstrap, or None when it never recorded one (then it counts as closed)."""
        try:
            found: Bootstrap = self.get(Bootstrap.create_id(), Bootstrap)
        except NotFound:
            return None
        return found

    def _alone(self, actor: str) -> Bootstrap | None:
        """The open bootstrap when ``actor`` may act alone in it, else None."""
        bootstrap = self.bootstrap()
        return bootstrap if bootstrap is not None and bootstrap.lets_act_alone(actor) else None

    def _propose(self, kind: str, details: dict[str, Any], reason: str, actor: str) -> Outcome:
        change = PrivilegedChange(kind=kind, details=details, reason=reason, actor=actor)
        written = self._written(change)
        return Outcome(written.id, written.position, pending=True)

    # -- what the API asks for ----------------------------------------------------
    def register_principal_as_admin(self, name: str, kind: str, roles: list[str], actor: str) -> Written:
        """Register a principal; with ``admin`` or ``approver`` among its roles only in the bootstrap."""
        roles = Principal.check_registration(name, kind, roles)
        privileged = [r for r in roles if is_privileged_role(r)]
        bootstrap = self._alone(actor) if privileged else None
        if privileged and bootstrap is None:
            raise ConfirmationRequired(
                f"granting {', '.join(privileged)} needs a second admin: register the principal without it, then "
                "POST /v1/principals/{id}/roles and have another admin confirm the proposal",
                field="roles",
            )
        principal = Principal(name=name, kind=kind, roles=roles, actor=actor)
        closing = [r for r in privileged if closes_bootstrap(r)]
        if bootstrap is None or not closing:
            return self._written(principal)
        bootstrap.close(f"{', '.join(closing)} granted to {name}", actor=actor)
        return self._written_all(principal, bootstrap)

    def request_role(self, principal_id: str, role: str, reason: str, actor: str) -> Outcome:
        """Grant ``role``: at once unless it is privileged, then in the bootstrap only, else proposed."""
        principal: Principal = self.get(principal_id, Principal)
        if not is_privileged_role(role):
            principal.grant_role(role, actor=actor)
            written = self._written(principal)
            return Outcome(written.id, written.position, pending=False)
        principal.grant_role(role, actor=actor)  # refuses a role already held before anything is proposed
        bootstrap = self._alone(actor)
        if bootstrap is not None:
            if not closes_bootstrap(role):
                written = self._written(principal)
            else:
                bootstrap.close(f"{role} granted to {principal.name}", actor=actor)
                written = self._written_all(principal, bootstrap)
            return Outcome(written.id, written.position, pending=False)
        return self._propose(GRANT_ROLE, {"principal_id": principal_id, "role": role}, reason, actor)

    def request_api_key(self, principal_id: str, token: str, label: str, reason: str, actor: str) -> Outcome:
        """Issue ``token`` as an API key: at once for oneself (or in the bootstrap), else propose a key
        (``token`` is then dropped: the confirming admin gets a fresh one)."""
        principal: Principal = self.get(principal_id, Principal)
        principal.check_active()
        if principal_id == actor or self._alone(actor) is not None:
            written = self._written(ApiKey.issue(principal, key_digest(token), label, actor=actor))
            return Outcome(written.id, written.position, pending=False, api_key=token)
        return self._propose(ISSUE_API_KEY, {"principal_id": principal_id, "label": label}, reason, actor)

    def request_policy(self, model_name: str, policy: dict[str, Any], reason: str, actor: str) -> Outcome:
        """Change a model's policy: at once unless it weakens it, else proposed (the bootstrap acts alone)."""
        model: Model = self.get(Model.create_id(name=model_name), Model)
        new = ApprovalPolicy.from_dict(policy)
        if not model.policy.weakened_by(new) or self._alone(actor) is not None:
            model.change_policy(new.to_dict(), actor=actor)
            written = self._written(model)
            return Outcome(written.id, written.position, pending=False)
        return self._propose(CHANGE_POLICY, {"model_name": model_name, "policy": new.to_dict()}, reason, actor)

    def check_policy_at_registration(self, model_name: str, policy: dict[str, Any] | None) -> None:
        """Registering a version may set its model's policy, but not weaken an existing one."""
        if policy is None:
            return
        try:
            model: Model = self.get(Model.create_id(name=model_name), Model)
        except NotFound:
            return
        weaker = model.policy.weakened_by(ApprovalPolicy.from_dict(policy))
        if weaker:
            raise ConfirmationRequired(
                f"this policy weakens {model_name}'s ({'; '.join(weaker)}): propose it with "
                f"PUT /v1/models/{model_name}/policy and have another admin confirm it",
                field="policy",
            )

    # -- the second pair of eyes -----------------------------------------------------
    def privileged_change(self, change_id: str) -> PrivilegedChange:
        """A proposed change, or :class:`NotFound`."""
        change: PrivilegedChange = self.get(change_id, PrivilegedChange)
        return change

    def confirm_change(self, change_id: str, fresh_token: str, actor: str) -> Outcome:
        """Confirm another admin's proposal and apply it, in one transaction (a proposed API key is
        ``fresh_token``, returned to the confirming admin)."""
        change = self.privileged_change(change_id)
        change.confirm(actor=actor)
        details = change.details
        token = None
        if change.kind == GRANT_ROLE:
            principal: Principal = self.get(details["principal_id"], Principal)
            principal.grant_role(details["role"], actor=actor)
            bootstrap = self.bootstrap()
            effects: list[Any] = [principal]
            if bootstrap is not None and bootstrap.open:
                bootstrap.close(f"{details['role']} granted to {principal.name} with two admins", actor=actor)
                effects.append(bootstrap)
        elif change.kind == ISSUE_API_KEY:
            holder: Principal = self.get(details["principal_id"], Principal)
            token = fresh_token
            effects = [ApiKey.issue(holder, key_digest(token), details["label"], actor=actor)]
        elif change.kind == CHANGE_POLICY:
            model: Model = self.get(Model.create_id(name=details["model_name"]), Model)
            model.change_policy(details["policy"], actor=actor)
            effects = [model]
        else:  # pragma: no cover - the aggregate refuses unknown kinds
            raise InvalidPayload(f"unknown change kind {change.kind!r}", field="kind")
        written = self._written_all(change, *effects)
        return Outcome(written.id, written.position, pending=False, api_key=token)

    def withdraw_change(self, change_id: str, reason: str, actor: str) -> Written:
        """Withdraw a pending proposal."""
        change = self.privileged_change(change_id)
        change.withdraw(reason, actor=actor)
        return self._written(change)
