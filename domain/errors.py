"""One error root for the ledger, with subclasses that carry a diagnosis.

Each error names what went wrong in domain words and, where one is to blame, the
offending field (a dotted path such as ``payload.schema.0.name``). The service
maps them to RFC 9457 problem details; the CLI prints them on one line.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""

    title = "Ledger error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    @property
    def type_slug(self) -> str:
        """A stable, kebab-case name for the error, used in problem ``type`` URIs."""
        name = type(self).__name__
        return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class InvalidPayload(LedgerError):
    """An event payload cannot be represented in canonical JSON (RFC 8785)."""

    title = "Invalid payload"


class PayloadTooLarge(LedgerError):
    """An event payload is larger than the configured limit."""

    title = "Payload too large"


class UnknownEventType(LedgerError):
    """An event's type (topic) is not one the ledger knows."""

    title = "Unknown event type"


class TamperedEvent(LedgerError):
    """A stored event does not match its seal (hash, fields or format)."""

    title = "Tampered event"


class UnknownSigningKey(LedgerError):
    """A signature names a key id that the ledger does not trust."""

    title = "Unknown signing key"


class VersionConflict(LedgerError):
    """Another writer appended to the aggregate first (optimistic concurrency)."""

    title = "Version conflict"


class NotFound(LedgerError):
    """The requested record does not exist."""

    title = "Not found"


class RuleViolated(LedgerError):
    """A business rule of an aggregate refuses the command."""

    title = "Rule violated"


class Unauthenticated(LedgerError):
    """No credentials, or credentials that do not identify an active principal."""

    title = "Unauthenticated"


class Forbidden(LedgerError):
    """The principal's roles do not allow the action."""

    title = "Forbidden"


class SeparationOfDutiesViolated(Forbidden):
    """The same person may not both produce and approve a model version."""

    title = "Separation of duties violated"


class InvalidStatementSignature(LedgerError):
    """A signed statement does not verify with the signer's registered key."""

    title = "Invalid statement signature"


class ApprovalRequired(LedgerError):
    """A model version cannot be deployed before the approval policy is met."""

    title = "Approval required"


class DeploymentStopped(LedgerError):
    """The deployment was stopped (kill switch); it serves nothing until resumed."""

    title = "Deployment stopped"
