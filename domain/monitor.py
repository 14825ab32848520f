"""Monitor: what the drift monitor found for a deployed model.

The monitor compares windows of recent prediction inputs with the training
data's reference profile; when a threshold is crossed it records
``DriftDetected`` with the statistics per feature and the window it looked at
(ledger positions of its first and last prediction), and, when the model's
policy asks for it, the retraining run it requested.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.statistics.series import series_id


class Monitor(LedgerAggregate):
    """Drift findings of one model name."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """Monitoring of the model began."""

        TOPIC = "mlledger.monitor.Created.v1"
        model_name: str

    class DriftDetected(LedgerAggregate.Event):
        """A window of inputs drifted from the reference profile."""

        TOPIC = "mlledger.monitor.DriftDetected.v1"
        model_name: str
        model_version_id: str
        number: int
        window: dict[str, Any]
        drifted_features: list[str]
        statistics: dict[str, Any]
        thresholds: dict[str, Any]
        retraining_run_id: str | None

    @staticmethod
    def create_id(model_name: str, **_: object) -> uuid.UUID:
        """One monitor per model name."""
        return series_id("monitor", model_name)

    @event(Created)
    def __init__(self, model_name: str, actor: str) -> None:
        self.model_name = model_name
        self.last_checked_position = 0
        self.alerts = 0

    @event(DriftDetected)
    def detect(
        self,
        model_name: str,
        model_version_id: str,
        number: int,
        window: dict[str, Any],
        drifted_features: list[str],
        statistics: dict[str, Any],
        thresholds: dict[str, Any],
        retraining_run_id: str | None,
        actor: str,
    ) -> None:
        """Record a drift alert."""
        self.alerts += 1
