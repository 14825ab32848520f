"""Predictions, model reports, drift alerts and data subjects as read models.

``predictions`` has one row per prediction (served, shadow, or logged from another
serving stack) with its output,
outcome and latest override, indexed for lookups by request id and subject and
for monitoring windows by model and position. Encrypted inputs never reach a
read model: the rows hold only what the event holds in clear, so a rebuild
after an erasure equals the original row for row.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.report import Report
from domain.subject import Subject
from projections.base import ProjectedEvent, Projection, handler_registry, insert_rows
from projections.tables import json_text, metadata

ID, NAME, DIGEST = sa.String(64), sa.String(200), sa.String(80)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", ID, primary_key=True),
    sa.Column("model_name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("model_version_id", ID, nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("shadow_of", ID, nullable=True),
    sa.Column("subject_id", sa.String(200), nullable=True),
    sa.Column("caller", sa.String(200), nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),  # None: a logged prediction whose maker did not say
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Column("correct", sa.Boolean, nullable=True),
    sa.Column("abs_error", sa.Float, nullable=True),
    sa.Column("outcome_position", sa.BigInteger, nullable=True),
    sa.Column("override", sa.Text, nullable=True),
    sa.Column("overrides", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("origin", sa.String(20), nullable=False, server_default="served"),  # served here, or logged
    sa.Column("predicted_at", sa.String(40), nullable=True),  # a logged prediction: when its maker made it
    sa.Index("ix_predictions_model_position", "model_name", "position"),
    sa.Index("ix_predictions_request", "request_id"),
    sa.Index("ix_predictions_subject", "subject_id"),
    sa.Index("ix_predictions_shadow", "shadow_of"),
)
model_reports = sa.Table(
    "model_reports",
    metadata,
    sa.Column("model_version_id", ID, primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("report_id", ID, nullable=False),
    sa.Column("model_name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("attachments", sa.Text, nullable=True),
    sa.Column("computed_from", sa.Text, nullable=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Index("ix_model_reports_model", "model_name", "number"),
)
drift_alerts = sa.Table(
    "drift_alerts",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("model_version_id", ID, nullable=False),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("drifted_features", sa.Text, nullable=False),
    sa.Column("statistics", sa.Text, nullable=False),
    sa.Column("window", sa.Text, nullable=False),
    sa.Column("retraining_run_id", ID, nullable=True),
    sa.Index("ix_drift_alerts_model", "model_name", "position"),
)
subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("subject_id", sa.String(200), primary_key=True),
    sa.Column("key_id", ID, nullable=False),
    sa.Column("first_position", sa.BigInteger, nullable=False),
    sa.Column("erased_at", sa.String(40), nullable=True),
    sa.Column("erased_by", sa.String(200), nullable=True),
    sa.Column("erased_position", sa.BigInteger, nullable=True),
)

_HANDLERS, _on = handler_registry()


def _label_and_score(output: dict[str, Any]) -> tuple[str | None, float | None]:
    label = json_text(output["label"]) if "label" in output else None
    score = output.get("probability", output.get("value"))
    return label, float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


_OUTCOME_COLUMNS = ("outcome", "correct", "abs_error", "outcome_position")


def _outcome_values(label: str | None, output_text: str, outcome: Any, position: int) -> dict[str, Any]:
    """The outcome columns of a prediction with ``label`` and ``output`` (JSON) once ``outcome`` is known."""
    correct = None if label is None else json_text(outcome) == label
    output = json.loads(output_text)
    abs_error = None
    if "value" in output and isinstance(outcome, (int, float)) and not isinstance(outcome, bool):
        abs_error = abs(float(outcome) - float(output["value"]))
    return {"outcome": json_text(outcome), "correct": correct, "abs_error": abs_error, "outcome_position": position}


def _stored_outputs(conn: Connection, prediction_ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """Label and output of stored predictions; every one must exist."""
    found: dict[str, tuple[str | None, str]] = {}
    for start in range(0, len(prediction_ids), 1000):
        chunk = prediction_ids[start : start + 1000]
        query = sa.select(predictions.c.prediction_id, predictions.c.label, predictions.c.output).where(
            predictions.c.prediction_id.in_(chunk)
        )
        found.update((row.prediction_id, (row.label, row.output)) for row in conn.execute(query))
    missing = [i for i in prediction_ids if i not in found]
    if missing:
        raise LookupError(f"predictions has no row for prediction {missing[0]}")
    return found


class Predictions(Projection):
    """Keeps ``predictions``, ``model_reports``, ``drift_alerts`` and ``subjects``."""

    name = "predictions"
    tables = (predictions, model_reports, drift_alerts, subjects)
    topics = (
        Prediction.Made.TOPIC,
        Prediction.Logged.TOPIC,
        Prediction.OutcomeRecorded.TOPIC,
        Prediction.Overridden.TOPIC,
        Report.Created.TOPIC,
        Report.Published.TOPIC,
        Monitor.DriftDetected.TOPIC,
        Subject.KeyIssued.TOPIC,
        Subject.Erased.TOPIC,
    )

    def __init__(self) -> None:
        self._made: list[dict[str, Any]] = []
        self._reports: dict[str, dict[str, Any]] = {}
        self._begin()

    def _begin(self) -> None:
        self._made = []
        # prediction id -> row, for the first ``_indexed`` rows of ``_made``
        self._made_rows: dict[str, dict[str, Any]] = {}
        self._indexed = 0
        # Outcomes and overrides of predictions written by earlier batches, applied at the batch's end:
        # prediction id -> (outcome, position), and -> (latest override, how many).
        self._outcomes: dict[str, tuple[Any, int]] = {}
        self._overrides: dict[str, tuple[str, int]] = {}
        self._subject_rows: list[dict[str, Any]] = []

    def begin_batch(self, conn: Connection) -> None:
        """Predictions arrive in bulk: collect them, their outcomes and overrides, and write once per batch."""
        self._begin()
        self._reports = {}

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Apply the event's handler."""
        _HANDLERS[event.topic](self, conn, event)

    def end_batch(self, conn: Connection) -> None:
        """Insert the batch's new predictions, then apply outcomes and overrides of earlier ones."""
        insert_rows(conn, predictions, self._made)
        insert_rows(conn, subjects, self._subject_rows)
        if self._outcomes:
            stored = _stored_outputs(conn, sorted(self._outcomes))
            changes = []
            for prediction_id, (outcome, position) in sorted(self._outcomes.items()):
                label, output = stored[prediction_id]
                values = _outcome_values(label, output, outcome, position)
                changes.append({"key": prediction_id, **{f"new_{k}": v for k, v in values.items()}})
            conn.execute(
                predictions.update()
                .where(predictions.c.prediction_id == sa.bindparam("key"))
                .values({column: sa.bindparam(f"new_{column}") for column in _OUTCOME_COLUMNS}),
                changes,
            )
        if self._overrides:
            conn.execute(
                predictions.update()
                .where(predictions.c.prediction_id == sa.bindparam("key"))
                .values(
                    override=sa.bindparam("new_override"),
                    overrides=predictions.c.overrides + sa.bindparam("count"),
                ),
                [
                    {"key": key, "new_override": override, "count": count}
                    for key, (override, count) in sorted(self._overrides.items())
                ],
            )
        self._begin()

    def _unwritten(self, prediction_id: str) -> dict[str, Any] | None:
        """The row of a prediction made earlier in this batch, not written yet; None if there is none."""
        while self._indexed < len(self._made):
            row = self._made[self._indexed]
            self._made_rows[row["prediction_id"]] = row
            self._indexed += 1
        return self._made_rows.get(prediction_id)

    @_on(Prediction.Made.TOPIC, Prediction.Logged.TOPIC)
    def _made_one(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        logged = e.topic == Prediction.Logged.TOPIC
        label, score = _label_and_score(p["output"])
        self._made.append(
            dict(
                prediction_id=e.aggregate_id,
                model_name=p["model_name"],
                number=p["number"],
                model_version_id=p["model_version_id"],
                role=p["role"],
                request_id=p["request_id"],
                shadow_of=p["shadow_of"],
                subject_id=p["subject_id"],
                caller=e.actor,
                output=json_text(p["output"]),
                label=label,
                score=score,
                latency_ms=p["latency_ms"],
                position=e.notification_id,
                recorded_at=e.recorded_at,
                outcome=None,
                correct=None,
                abs_error=None,
                outcome_position=None,
                override=None,
                overrides=0,
                origin="logged" if logged else "served",
                predicted_at=p["predicted_at"] if logged else None,
            )
        )

    @_on(Prediction.OutcomeRecorded.TOPIC)
    def _outcome(self, conn: Connection, e: ProjectedEvent) -> None:
        outcome, position = e.payload["outcome"], e.notification_id
        row = self._unwritten(e.aggregate_id)
        if row is not None:
            row.update(_outcome_values(row["label"], row["output"], outcome, position))
        else:
            self._outcomes[e.aggregate_id] = (outcome, position)

    @_on(Prediction.Overridden.TOPIC)
    def _overridden(self, conn: Connection, e: ProjectedEvent) -> None:
        override = json_text(
            {
                "decision": e.payload["decision"],
                "reason": e.payload["reason"],
                "actor": e.actor,
                "recorded_at": e.recorded_at,
            }
        )
        row = self._unwritten(e.aggregate_id)
        if row is not None:
            row["override"], row["overrides"] = override, row["overrides"] + 1
        else:
            _, count = self._overrides.get(e.aggregate_id, ("", 0))
            self._overrides[e.aggregate_id] = (override, count + 1)

    @_on(Report.Created.TOPIC)
    def _report_created(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            model_reports.insert(),
            dict(
                model_version_id=p["model_version_id"],
                kind=p["kind"],
                report_id=e.aggregate_id,
                model_name=p["model_name"],
                number=p["number"],
                summary=None,
                attachments=None,
                computed_from=None,
                position=e.notification_id,
                recorded_at=e.recorded_at,
            ),
        )

    @_on(Report.Published.TOPIC)
    def _report_published(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            model_reports.update()
            .where(model_reports.c.report_id == e.aggregate_id)
            .values(
                summary=json_text(p["summary"]),
                attachments=json_text(p["attachments"]),
                computed_from=json_text(p["computed_from"]),
                position=e.notification_id,
                recorded_at=e.recorded_at,
            )
        )

    @_on(Monitor.DriftDetected.TOPIC)
    def _drift(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            drift_alerts.insert(),
            dict(
                position=e.notification_id,
                model_name=p["model_name"],
                number=p["number"],
                model_version_id=p["model_version_id"],
                recorded_at=e.recorded_at,
                drifted_features=json_text(p["drifted_features"]),
                statistics=json_text(p["statistics"]),
                window=json_text(p["window"]),
                retraining_run_id=p["retraining_run_id"],
            ),
        )

    @_on(Subject.KeyIssued.TOPIC)
    def _subject(self, conn: Connection, e: ProjectedEvent) -> None:
        self._subject_rows.append(
            dict(
                subject_id=e.payload["subject_id"],
                key_id=e.payload["key_id"],
                first_position=e.notification_id,
                erased_at=None,
                erased_by=None,
                erased_position=None,
            ),
        )

    @_on(Subject.Erased.TOPIC)
    def _erased(self, conn: Connection, e: ProjectedEvent) -> None:
        insert_rows(conn, subjects, self._subject_rows)  # the subject's key may have been issued in this batch
        self._subject_rows = []
        conn.execute(
            subjects.update()
            .where(subjects.c.key_id == e.payload["key_id"])
            .values(erased_at=e.recorded_at, erased_by=e.actor, erased_position=e.notification_id)
        )
