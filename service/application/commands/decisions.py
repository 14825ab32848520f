"""What happens to a decision after it was made: outcomes, human overrides, erasure of a data subject."""

from __future__ import annotations

from typing import Any, Protocol

from domain.errors import NotFound
from domain.prediction import Prediction, check_subject_id
from domain.subject import Subject
from service.application.ledger_core import LedgerCore, Written


class KeyShredder(Protocol):
    """Destroys a data subject's key (the subject key vault)."""

    def destroy(self, subject_id: str) -> bool: ...


class DecisionCommands(LedgerCore):
    """Commands on recorded predictions and data subjects."""

    def prediction(self, prediction_id: str) -> Prediction:
        """The prediction, or :class:`NotFound`."""
        prediction: Prediction = self.get(prediction_id, Prediction)
        return prediction

    def record_outcome(self, prediction_id: str, outcome: Any, actor: str) -> Written:
        """Record the true outcome of a served prediction."""
        prediction = self.prediction(prediction_id)
        prediction.record_outcome(outcome, actor=actor)
        return self._written(prediction)

    def override_decision(self, prediction_id: str, decision: dict[str, Any], reason: str, actor: str) -> Written:
        """Record a person reversing or replacing a decision."""
        prediction = self.prediction(prediction_id)
        prediction.override(decision, reason, actor=actor)
        return self._written(prediction)

    def erase_subject(self, subject_id: str, reason: str, vault: KeyShredder, actor: str) -> Written:
        """Destroy the subject's key, then record the tombstone.

        The key goes first: if the process dies in between, the inputs are
        already unreadable and repeating the erasure records the tombstone.
        """
        check_subject_id(subject_id)
        try:
            subject: Subject = self.get(Subject.create_id(subject_id=subject_id), Subject)
        except NotFound:
            raise NotFound(f"no data subject {subject_id} has inputs in the ledger", field="subject_id") from None
        subject.erase(reason, actor=actor)  # refuses a second erasure, or no reason, before anything is destroyed
        vault.destroy(subject_id)
        return self._written(subject)
