"""Four-eyes for privileged changes: one admin proposes, a different admin confirms.

The acts that could let one person bring a version to deployment alone, or
vouch alone for how a model was trained, are privileged: granting ``approver``,
``admin`` or ``runner`` (a runner principal signs execution statements: an
admin who could grant it to themselves could make any run look trained),
issuing an API key for someone else, and weakening a model's approval policy. Each is proposed as a
:class:`PrivilegedChange` and takes effect only when another admin confirms it
(in the same transaction as the confirmation); the proposer can withdraw it.

Bootstrap: a fresh ledger has one admin and nobody else, so nobody could
confirm. :class:`Bootstrap` records that phase: while it is open, the only
admin acts alone; it closes for good, in the same transaction, at the first
grant of ``admin`` or ``approver`` to anyone (granting ``runner`` alone in the
bootstrap leaves it open: runners come before a second admin). From then on every privileged
change needs two admins. A ledger that never recorded a bootstrap (written
before this rule) counts as closed.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import ChangeNotPending, InvalidPayload, ProposerCannotConfirm
from domain.roles import Role
from domain.statistics.series import series_id

GRANT_ROLE, ISSUE_API_KEY, CHANGE_POLICY = "grant_role", "issue_api_key", "change_policy"
KINDS = (GRANT_ROLE, ISSUE_API_KEY, CHANGE_POLICY)
PRIVILEGED_ROLES = frozenset({Role.ADMIN.value, Role.APPROVER.value, Role.RUNNER.value})
BOOTSTRAP_CLOSING_ROLES = frozenset({Role.ADMIN.value, Role.APPROVER.value})
PENDING, CONFIRMED, WITHDRAWN = "pending", "confirmed", "withdrawn"


def is_privileged_role(role: str) -> bool:
    """True for the roles whose grant needs a second admin (``admin``, ``approver``, ``runner``)."""
    return role in PRIVILEGED_ROLES


def closes_bootstrap(role: str) -> bool:
    """True for the roles whose first grant ends the bootstrap (``admin``, ``approver``)."""
    return role in BOOTSTRAP_CLOSING_ROLES


class PrivilegedChange(LedgerAggregate):
    """A privileged change one admin proposed, pending another admin's confirmation."""

    class Proposed(Aggregate.Created, LedgerAggregate.Event):
        """An admin proposed a change: ``kind`` with its ``details`` (a principal id, a role, a policy...)."""

        TOPIC = "mlledger.privilegedchange.Proposed.v1"
        kind: str
        details: dict[str, Any]
        reason: str

    class Confirmed(LedgerAggregate.Event):
        """Another admin confirmed the change; its effect is recorded in the same transaction."""

        TOPIC = "mlledger.privilegedchange.Confirmed.v1"

    class Withdrawn(LedgerAggregate.Event):
        """The change will not happen."""

        TOPIC = "mlledger.privilegedchange.Withdrawn.v1"
        reason: str

    @event(Proposed)
    def __init__(self, kind: str, details: dict[str, Any], reason: str, actor: str) -> None:
        if kind not in KINDS:
            raise InvalidPayload(f"kind must be one of {', '.join(KINDS)}", field="kind")
        self.kind = kind
        self.details = details
        self.reason = reason
        self.proposer = actor
        self.status = PENDING
        self.confirmer: str | None = None

    def check_pending(self) -> None:
        """Only a pending change is confirmed or withdrawn."""
        if self.status != PENDING:
            raise ChangeNotPending(f"this change is {self.status}, not pending")

    def confirm(self, actor: str) -> None:
        """Confirm as a second admin: never the proposer."""
        self.check_pending()
        if actor == self.proposer:
            raise ProposerCannotConfirm(
                "four eyes: the admin who proposed a privileged change cannot confirm it; another admin must",
                field="change_id",
            )
        self._confirm(actor=actor)

    @event(Confirmed)
    def _confirm(self, actor: str) -> None:
        self.status = CONFIRMED
        self.confirmer = actor

    def withdraw(self, reason: str, actor: str) -> None:
        """Drop the change (the proposer or another admin)."""
        self.check_pending()
        self._withdraw(reason=reason, actor=actor)

    @event(Withdrawn)
    def _withdraw(self, reason: str, actor: str) -> None:
        self.status = WITHDRAWN


class Bootstrap(LedgerAggregate):
    """The phase of a fresh ledger in which its only admin acts alone."""

    class Opened(Aggregate.Created, LedgerAggregate.Event):
        """The ledger was created with its first admin."""

        TOPIC = "mlledger.bootstrap.Opened.v1"
        admin_id: str

    class Closed(LedgerAggregate.Event):
        """From now on, privileged changes need a second admin."""

        TOPIC = "mlledger.bootstrap.Closed.v1"
        reason: str

    @staticmethod
    def create_id(**_: object) -> uuid.UUID:
        """One bootstrap per ledger."""
        return series_id("bootstrap", "ledger")

    @event(Opened)
    def __init__(self, admin_id: str, actor: str) -> None:
        self.admin_id = admin_id
        self.open = True

    def lets_act_alone(self, actor: str) -> bool:
        """True while the bootstrap is open and ``actor`` is its admin."""
        return self.open and actor == self.admin_id

    def close(self, reason: str, actor: str) -> None:
        """End the bootstrap (once; later calls do nothing)."""
        if self.open:
            self._close(reason=reason, actor=actor)

    @event(Closed)
    def _close(self, reason: str, actor: str) -> None:
        self.open = False
