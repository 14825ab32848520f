"""Subject: a data subject whose inputs are encrypted with a key of their own.

The ledger records only a handle of the key (its id), never the key. Erasure
(GDPR Art. 17) destroys the key outside the ledger and records a tombstone
here; the subject's recorded inputs stay in the log as ciphertext that nobody
can read any more, so every hash, signature and proof still verifies.
"""

from __future__ import annotations

import uuid

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload, SubjectErased
from domain.prediction import REASON_MAX, check_subject_id
from domain.statistics.series import series_id


class Subject(LedgerAggregate):
    """A data subject: the handle of their key, and their erasure."""

    class KeyIssued(Aggregate.Created, LedgerAggregate.Event):
        """The subject's first input was recorded; their key got this id."""

        TOPIC = "mlledger.subject.KeyIssued.v1"
        subject_id: str
        key_id: str

    class Erased(LedgerAggregate.Event):
        """The subject's key was destroyed: their inputs can no longer be read."""

        TOPIC = "mlledger.subject.Erased.v1"
        key_id: str
        reason: str

    @staticmethod
    def create_id(subject_id: str, **_: object) -> uuid.UUID:
        """One aggregate per subject reference."""
        return series_id("subject", subject_id)

    @event(KeyIssued)
    def __init__(self, subject_id: str, key_id: str, actor: str) -> None:
        check_subject_id(subject_id)
        self.subject_id = subject_id
        self.key_id = key_id
        self.erased = False

    def check_not_erased(self) -> None:
        """New inputs of an erased subject are refused."""
        if self.erased:
            raise SubjectErased(
                f"subject {self.subject_id} was erased; their data is no longer processed", field="subject_id"
            )

    def erase(self, reason: str, actor: str) -> None:
        """Record the tombstone (the key is destroyed by the service first)."""
        if self.erased:
            raise SubjectErased(f"subject {self.subject_id} is already erased", field="subject_id")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
            raise InvalidPayload(f"erasure needs a reason of 1 to {REASON_MAX} characters", field="reason")
        self._erase(key_id=self.key_id, reason=reason, actor=actor)

    @event(Erased)
    def _erase(self, key_id: str, reason: str, actor: str) -> None:
        self.erased = True
