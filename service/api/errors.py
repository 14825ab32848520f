"""How the ledger's errors read over HTTP: their status and problem type.

The domain names what went wrong (``domain.errors`` and the aggregates' own
errors); this module alone decides the HTTP status of each. ``STATUS`` lists
the classes that set a status; every other error takes the status of the
nearest class of its MRO that is listed, so a rule named more precisely (a
subclass of ``RuleViolated``) answers as ``RuleViolated`` does without being
listed here.

The problem ``type`` and title stay in the domain (``LedgerError.type_slug``,
``title``): a subclass marked ``names_a_case`` reads to an HTTP client exactly
as its base does, status included.
"""

from __future__ import annotations

from domain.errors import (
    ApprovalRequired,
    DeploymentStopped,
    Forbidden,
    InvalidPayload,
    InvalidStatementSignature,
    LedgerError,
    LedgerKeyRetired,
    NotFound,
    PayloadTooLarge,
    RuleViolated,
    TamperedEvent,
    Unauthenticated,
    UnknownEventType,
    UnknownSigningKey,
    VersionConflict,
)
from domain.integrity.checkpoint import CheckpointError
from domain.integrity.keys import InvalidKey
from domain.integrity.provenance import InvalidEnvelope
from domain.integrity.witness import CheckpointNotWitnessed
from service.application.ledger_core import KeyNotInKeyring
from service.ml.model_loading import UnsupportedModel
from service.ml.tabular import TableError
from service.serving.batching import WriterStopped
from service.serving.vault import KeyDestroyed
from service.store.blobs import BlobTampered, StorageFull
from service.store.revision import NotMigrated


class ProjectionsBehind(LedgerError):
    """Read models have not reached the position the client asked for."""

    title = "Projections behind"


class DatabaseUnavailable(LedgerError):
    """The database could not be reached, or dropped the request's connection; nothing of it is acknowledged."""

    title = "Database unavailable"


class ProofRangeError(LedgerError):
    """A proof was asked for sizes the log does not have."""

    title = "Proof range invalid"


STATUS: dict[type[LedgerError], int] = {
    LedgerError: 400,
    InvalidPayload: 422,
    PayloadTooLarge: 413,
    UnknownEventType: 422,
    TamperedEvent: 500,
    UnknownSigningKey: 422,
    VersionConflict: 409,
    NotFound: 404,
    RuleViolated: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    InvalidStatementSignature: 422,
    ApprovalRequired: 409,
    DeploymentStopped: 503,
    CheckpointError: 422,
    CheckpointNotWitnessed: 503,
    InvalidEnvelope: 422,
    InvalidKey: 422,
    KeyNotInKeyring: 500,
    LedgerKeyRetired: 503,
    NotMigrated: 503,
    UnsupportedModel: 422,
    TableError: 422,
    BlobTampered: 409,
    StorageFull: 507,
    DatabaseUnavailable: 503,
    WriterStopped: 503,
    KeyDestroyed: 410,
    ProjectionsBehind: 503,
    ProofRangeError: 422,
}
"""The HTTP status of each error class that sets one; subclasses inherit it."""


def http_status(error: LedgerError | type[LedgerError]) -> int:
    """The HTTP status of ``error``: that of the nearest listed class of its MRO."""
    kind = error if isinstance(error, type) else type(error)
    return next(STATUS[cls] for cls in kind.__mro__ if cls in STATUS)  # LedgerError is always listed
