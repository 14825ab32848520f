"""The nine sections of a model card (Mitchell et al., 2019), each built only from what the ledger recorded.

:class:`CardSections` holds the opened events, run manifests and prediction
statistics of one export, the look-ups every section uses, and the builders of
the card proper; the appendices extend it in
:mod:`service.exports.model_card_appendices`. Figures drawn on the way are
kept in ``figures`` by file name.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from domain.dataset import DatasetVersion
from domain.deployment import Deployment
from domain.model import Model, ModelVersion
from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.principal import Principal
from domain.report import FAIRNESS, Report
from domain.run import Run
from domain.subject import Subject
from service.exports import plots
from service.exports.document import Facts, Figure, Heading, Para, Section, Table

__all__ = ["NOT_RECORDED", "CardSections", "Recorded"]

NOT_RECORDED = "Not recorded in the ledger."


@dataclass(frozen=True)
class Recorded:
    """An opened event of the bundle."""

    position: int
    aggregate_id: str
    topic: str
    actor: str
    at: str
    payload: dict[str, Any]


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value).lower()
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class CardSections:
    """The material of one export and the builders of the card's nine sections."""

    def __init__(
        self,
        model: Model,
        versions: list[ModelVersion],
        events: list[Recorded],
        manifests: dict[str, dict[str, Any]],
        statistics: dict[str, Any],
        attachment_paths: dict[str, str],
        prediction_events: int,
    ) -> None:
        self.model, self.versions, self.manifests = model, versions, manifests
        self.statistics, self.attachment_paths = statistics, attachment_paths
        self.events = events
        self.prediction_events = prediction_events
        self.figures: dict[str, bytes] = {}
        self.datasets = [e for e in self.events if e.topic == DatasetVersion.Registered.TOPIC]
        self.reports = self._reports()
        self.names = {e.aggregate_id: str(e.payload["name"]) for e in self._of(Principal.Registered.TOPIC)}

    def _who(self, principal_id: str) -> str:
        """A principal's name when the bundle holds its record, else its id."""
        name = self.names.get(principal_id)
        return f"{name} ({principal_id})" if name else principal_id

    def _of(self, *topics: str) -> list[Recorded]:
        return [e for e in self.events if e.topic in topics]

    def _reports(self) -> list[tuple[Recorded, Recorded]]:
        created = {e.aggregate_id: e for e in self._of(Report.Created.TOPIC)}
        latest: dict[str, Recorded] = {}
        for e in self._of(Report.Published.TOPIC):
            latest[e.aggregate_id] = e
        return [(created[rid], published) for rid, published in latest.items() if rid in created]

    def _reports_of(self, kind: str) -> list[tuple[Recorded, Recorded]]:
        return [(c, p) for c, p in self.reports if c.payload["kind"] == kind]

    def _figure(self, name: str, png: bytes, caption: str) -> Figure:
        self.figures[name] = png
        return Figure(name, caption)

    def _run_doc(self, version: ModelVersion) -> dict[str, Any]:
        return self.manifests.get(version.run_id) or {}

    def _details(self) -> Section:
        policy = self.model.policy
        champion = self._current_champion()
        blocks: list[Any] = [
            Facts(
                [
                    ("Model", self.model.name),
                    ("Versions", str(len(self.versions))),
                    ("Champion now", f"version {champion}" if champion else "none"),
                    (
                        "Approval policy",
                        f"{policy.required_approvals} approver(s); separation of duties "
                        f"{'on' if policy.separation_of_duties else 'off'}; one rejection "
                        f"{'blocks' if policy.rejection_blocks else 'does not block'} a version",
                    ),
                    (
                        "Fairness gate",
                        "none"
                        if policy.min_impact_ratio is None
                        else f"approvals refused while a group's impact ratio is under {policy.min_impact_ratio}",
                    ),
                    ("Retraining on drift", "requested automatically" if policy.retrain_on_drift else "not automatic"),
                ]
            )
        ]
        rows = []
        for v in self.versions:
            doc = self._run_doc(v)
            pipeline = (doc.get("inputs") or {}).get("pipeline") or {}
            spec = pipeline.get("spec") or {}
            rows.append(
                [
                    str(v.number),
                    v.state(policy),
                    self._who(v.registered_by),
                    v.run_id,
                    f"{pipeline.get('name') or 'client-reported'} ({pipeline.get('kind') or doc.get('mode') or '?'})",
                    str(spec.get("estimator") or spec.get("hidden_layers") or "not recorded"),
                    f"{v.artifact_name} {v.artifact_digest}",
                ]
            )
        blocks.append(
            Table(["version", "state", "registered by", "source run", "pipeline", "estimator", "artifact"], rows)
        )
        return Section("Model details", blocks)

    def _current_champion(self) -> int | None:
        champion = None
        for e in self._of(Deployment.ChampionSet.TOPIC, Deployment.RolledBack.TOPIC, Deployment.Retired.TOPIC):
            champion = None if e.topic == Deployment.Retired.TOPIC else e.payload["number"]
        return champion

    def _intended_use(self) -> Section:
        blocks: list[Any] = []
        for d in self.datasets:
            sheet = d.payload.get("datasheet") or {}
            for key in ("uses", "motivation"):
                if sheet.get(key):
                    blocks.append(Para(f"Datasheet of {d.payload['name']} v{d.payload['number']}, {key}: {sheet[key]}"))
        roles = Counter(
            e.topic
            for e in self._of(Deployment.ChampionSet.TOPIC, Deployment.ChallengerSet.TOPIC, Deployment.CanarySet.TOPIC)
        )
        if roles:
            blocks.append(
                Para(
                    "Deployed as: "
                    + ", ".join(
                        f"{topic.split('.')[2].removesuffix('Set').lower()} ({count} change(s))"
                        for topic, count in sorted(roles.items())
                    )
                )
            )
        return Section("Intended use", blocks or [Para(NOT_RECORDED)])

    def _protected(self) -> dict[str, list[str]]:
        return {
            f"{d.payload['name']} v{d.payload['number']}": list(
                (d.payload.get("datasheet") or {}).get("protected_attributes") or []
            )
            for d in self.datasets
        }

    def _factors(self) -> Section:
        blocks: list[Any] = [
            Para(f"Protected attributes recorded in the datasheet of {name}: {', '.join(attrs)}.")
            for name, attrs in self._protected().items()
            if attrs
        ]
        for created, published in self._reports_of(FAIRNESS):
            names = [entry.get("name") for entry in published.payload["summary"].get("attributes") or []]
            blocks.append(
                Para(
                    f"The fairness report of version {created.payload['number']} analyses: "
                    f"{', '.join(str(n) for n in names) or 'no attribute'}."
                )
            )
        return Section("Factors", blocks or [Para(NOT_RECORDED)])

    def _metrics(self) -> Section:
        blocks: list[Any] = []
        for v in self.versions:
            final = (self._run_doc(v).get("outputs") or {}).get("metrics") or {}
            blocks.append(Heading(f"Version {v.number} (run {v.run_id})"))
            if not final:
                blocks.append(Para(NOT_RECORDED))
                continue
            blocks.append(
                Table(
                    ["metric", "final value", "step"],
                    [[k, _num(p["value"]), str(p["step"])] for k, p in sorted(final.items())],
                )
            )
            history = self._metric_history(v.run_id)
            if any(len(points) > 1 for points in history.values()):
                blocks.append(
                    self._figure(
                        f"metrics-v{v.number}.png",
                        plots.line_chart(f"{self.model.name} v{v.number}: metrics by step", history, "step", "value"),
                        f"Metrics of version {v.number} by step, as logged by its run.",
                    )
                )
        return Section("Metrics", blocks or [Para(NOT_RECORDED)])

    def _metric_history(self, run_id: str) -> dict[str, list[tuple[float, float]]]:
        history: dict[str, list[tuple[float, float]]] = {}
        for e in self._of(Run.MetricsLogged.TOPIC):
            if e.aggregate_id == run_id:
                for point in e.payload["metrics"]:
                    history.setdefault(point["key"], []).append((float(point["step"]), float(point["value"])))
        return {k: sorted(points) for k, points in history.items()}

    def _evaluation_data(self) -> Section:
        blocks: list[Any] = []
        for v in self.versions:
            doc = self._run_doc(v)
            inputs = doc.get("inputs") or {}
            spec = (inputs.get("pipeline") or {}).get("spec") or {}
            evaluation = [
                a
                for a in (doc.get("outputs") or {}).get("artifacts") or []
                if "eval" in a["name"] or "prediction" in a["name"]
            ]
            if "validation_split" in spec or evaluation:
                text = f"Version {v.number}: "
                if "validation_split" in spec:
                    text += (
                        f"a held-out split of {spec['validation_split']} of the training data, drawn with "
                        f"seed {inputs.get('seed')}. "
                    )
                text += " ".join(f"Evaluation file {a['name']} ({a['digest']})." for a in evaluation)
                blocks.append(Para(text.strip()))
            else:
                blocks.append(Para(f"Version {v.number}: {NOT_RECORDED}"))
        return Section("Evaluation data", blocks or [Para(NOT_RECORDED)])

    def _training_data(self) -> Section:
        rows = [
            [
                f"{d.payload['name']} v{d.payload['number']}",
                str(d.payload["row_count"]),
                str(d.payload["size"]),
                d.payload["format"],
                d.payload["digest"],
                d.payload["source"],
            ]
            for d in self.datasets
        ]
        if not rows:
            return Section("Training data", [Para(NOT_RECORDED)])
        return Section("Training data", [Table(["dataset", "rows", "bytes", "format", "digest", "source"], rows)])

    def _quantitative(self) -> Section:
        blocks: list[Any] = []
        for created, published in self._reports_of(FAIRNESS):
            number = created.payload["number"]
            for entry in published.payload["summary"].get("attributes") or []:
                groups = entry.get("groups") or []
                blocks.append(Heading(f"Version {number}: {entry.get('name')}"))
                blocks.append(
                    Table(
                        ["group", "rows", "selection rate", "impact ratio", "TPR", "accuracy"],
                        [
                            [
                                str(g.get("group")),
                                _num(g.get("n")),
                                _num(g.get("selection_rate")),
                                _num(g.get("impact_ratio")),
                                _num(g.get("tpr")),
                                _num(g.get("accuracy")),
                            ]
                            for g in groups
                        ],
                    )
                )
                rated = [g for g in groups if isinstance(g.get("selection_rate"), (int, float))]
                if rated:
                    blocks.append(
                        self._figure(
                            f"fairness-v{number}-{len(self.figures)}.png",
                            plots.bar_chart(
                                f"Selection rate by {entry.get('name')}",
                                [str(g["group"]) for g in rated],
                                [float(g["selection_rate"]) for g in rated],
                                "selection rate",
                            ),
                            f"Selection rate per group of {entry.get('name')} (version {number}).",
                        )
                    )
        return Section("Quantitative analyses", blocks or [Para(NOT_RECORDED)])

    def _ethics(self) -> Section:
        blocks: list[Any] = []
        for d in self.datasets:
            pii = (d.payload.get("datasheet") or {}).get("pii_columns") or []
            if pii:
                blocks.append(
                    Para(f"{d.payload['name']} v{d.payload['number']} holds personal data in: {', '.join(pii)}.")
                )
        erasures = self._of(Subject.Erased.TOPIC)
        overrides = self._of(Prediction.Overridden.TOPIC)
        if self.prediction_events:
            blocks.append(
                Para(
                    "Inputs of identified data subjects are recorded encrypted with a key per subject; this bundle "
                    f"carries ciphertext only. {len(erasures)} erasure(s) and {len(overrides)} human override(s) of "
                    "decisions are recorded in this bundle."
                )
            )
        policy = self.model.policy
        if policy.separation_of_duties:
            blocks.append(Para("Separation of duties: nobody who trained or registered a version may approve it."))
        return Section("Ethical considerations", blocks or [Para(NOT_RECORDED)])

    def _caveats(self) -> Section:
        blocks: list[Any] = []
        for e in self._of(Run.ReproductionDiverged.TOPIC):
            blocks.append(
                Para(
                    f"Run {e.aggregate_id} did not reproduce (run {e.payload['reproduction_run_id']}): "
                    f"{_json(e.payload['differences'])[:500]}"
                )
            )
        for e in self._of(DatasetVersion.Deprecated.TOPIC):
            blocks.append(Para(f"Dataset version {e.aggregate_id} was deprecated: {e.payload['reason']}"))
        for v in self.versions:
            if v.state(self.model.policy) == "rejected":
                blocks.append(Para(f"Version {v.number} was rejected by an approver."))
        alerts = self._of(Monitor.DriftDetected.TOPIC)
        if alerts:
            last = alerts[-1]
            blocks.append(
                Para(
                    f"{len(alerts)} drift alert(s); the latest at {last.at} on version "
                    f"{last.payload['number']}: {', '.join(last.payload['drifted_features'])}."
                )
            )
        for e in self._of(Deployment.Stopped.TOPIC):
            blocks.append(Para(f"The deployment was stopped at {e.at} by {e.actor}: {e.payload['reason']}"))
        return Section("Caveats and recommendations", blocks or [Para("No caveat was recorded in the ledger.")])
