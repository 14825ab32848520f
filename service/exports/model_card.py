"""The model card (Mitchell et al., 2019) and the reports a regulator reads, built
only from what the ledger recorded about the model.

The card's nine sections come first; appendices follow with the datasheets,
explainability, fairness, validation and monitoring reports, the approvals with
their signed statements, the deployment history, human overrides and erasure
tombstones. Every value comes from a signed event of the bundle, a run manifest
or the predictions read model (counts over the export window, named as such);
where nothing was recorded the section says so, and nothing is estimated.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.integrity.sealing import SealedEvent
from domain.model import Model, ModelVersion
from domain.prediction import Prediction
from domain.subject import Subject
from projections.predictions import predictions
from service.exports.document import Document
from service.exports.model_card_appendices import CardAppendices
from service.exports.model_card_sections import NOT_RECORDED, Recorded

__all__ = [
    "APPENDICES",
    "CARD_SECTIONS",
    "NOT_RECORDED",
    "UNREAD_TOPICS",
    "CardEvents",
    "ModelCard",
    "Recorded",
    "prediction_statistics",
]

CARD_SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
)
APPENDICES = (
    "Datasheets",
    "Explainability report",
    "Fairness report",
    "Validation report",
    "Monitoring report",
    "Approvals and signed statements",
    "Deployment history",
    "Human overrides",
    "Erasure tombstones",
)
UNREAD_TOPICS = frozenset(
    {Prediction.Made.TOPIC, Prediction.Logged.TOPIC, Prediction.OutcomeRecorded.TOPIC, Subject.KeyIssued.TOPIC}
)
"""Events the card counts but never reads (the bulk of a bundle: it needs only their hashes)."""
_PREDICTION_TOPICS = frozenset({Prediction.Made.TOPIC, Prediction.Logged.TOPIC})


def prediction_statistics(conn: Connection, model_name: str, since: str | None, until: str | None) -> dict[str, Any]:
    """Counts of the model's predictions in the window, from the predictions read model."""
    t = predictions
    where = [t.c.model_name == model_name]
    if since is not None:
        where.append(t.c.recorded_at >= since)
    if until is not None:
        where.append(t.c.recorded_at <= until)
    counted = sa.func.count()
    outcomes = sa.func.sum(sa.case((t.c.outcome_position.is_not(None), 1), else_=0))
    correct = sa.func.sum(sa.case((t.c.correct.is_(True), 1), else_=0))
    judged = sa.func.sum(sa.case((t.c.correct.is_not(None), 1), else_=0))
    overridden = sa.func.sum(sa.case((t.c.overrides > 0, 1), else_=0))
    rows = conn.execute(
        sa.select(t.c.number, t.c.role, counted, outcomes, judged, correct, overridden, sa.func.avg(t.c.latency_ms))
        .where(*where)
        .group_by(t.c.number, t.c.role)
        .order_by(t.c.number, t.c.role)
    ).all()
    day = sa.func.substr(t.c.recorded_at, 1, 10)
    days = conn.execute(sa.select(day, counted).where(*where).group_by(day).order_by(day)).all()
    return {
        "by_version": [
            {
                "number": int(n),
                "role": role,
                "predictions": int(c),
                "outcomes": int(o or 0),
                "judged": int(j or 0),
                "correct": int(k or 0),
                "overridden": int(v or 0),
                "mean_latency_ms": float(lat or 0.0),
            }
            for n, role, c, o, j, k, v, lat in rows
        ],
        "per_day": [(str(d), int(c)) for d, c in days],
    }


class CardEvents:
    """What the card takes from the bundle's events, gathered as they stream past: every event it reads,
    opened, and how many prediction events there are (never the predictions themselves)."""

    def __init__(self) -> None:
        self.recorded: list[Recorded] = []
        self.prediction_events = 0

    def add(self, position: int, aggregate_id: str, topic: str, record: bytes) -> None:
        """One event of the bundle (``record`` may be only its head for a topic in :data:`UNREAD_TOPICS`)."""
        if topic in _PREDICTION_TOPICS:
            self.prediction_events += 1
        if topic in UNREAD_TOPICS:
            return
        envelope = SealedEvent.from_record(record).envelope_fields()
        self.recorded.append(
            Recorded(
                position,
                aggregate_id,
                topic,
                str(envelope["actor"]),
                str(envelope["recorded_at"]),
                dict(envelope["payload"]),
            )
        )


class ModelCard(CardAppendices):
    """Builds the card and its appendices for one export."""

    def __init__(
        self,
        model: Model,
        versions: list[ModelVersion],
        events: CardEvents,
        manifests: dict[str, dict[str, Any]],
        statistics: dict[str, Any],
        scope: dict[str, Any],
        attachment_paths: dict[str, str],
    ) -> None:
        super().__init__(
            model, versions, events.recorded, manifests, statistics, attachment_paths, events.prediction_events
        )
        self.scope = scope

    def document(self) -> Document:
        """The whole report: card sections, then appendices."""
        card = [
            self._details(),
            self._intended_use(),
            self._factors(),
            self._metrics(),
            self._evaluation_data(),
            self._training_data(),
            self._quantitative(),
            self._ethics(),
            self._caveats(),
        ]
        appendices = [
            self._datasheets(),
            self._explainability(),
            self._fairness(),
            self._validation(),
            self._monitoring(),
            self._approvals(),
            self._deployments(),
            self._overrides(),
            self._erasures(),
        ]
        window = f"{self.scope['from'] or 'the beginning'} to {self.scope['to'] or 'now'}"
        return Document(
            title=f"Model card: {self.model.name}",
            subtitle=[
                f"Predictions in scope: {self.scope['predictions']} ({self.prediction_events} prediction events in "
                f"this bundle), window {window}.",
                "Numbers are rounded to 6 significant digits; the exact values are in the signed events.",
            ],
            sections=card + appendices,
            figures=self.figures,
        )
