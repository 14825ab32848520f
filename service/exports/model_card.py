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

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.dataset import DatasetVersion
from domain.deployment import Deployment
from domain.model import Model, ModelVersion
from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.principal import Principal
from domain.report import EXPLANATIONS, FAIRNESS, Report
from domain.run import Run
from domain.sealing import SealedEvent
from domain.subject import Subject
from projections.predictions import predictions
from service.exports import plots
from service.exports.document import Code, Document, Facts, Figure, Heading, Para, Section, Table
from service.exports.scope import EventRow

CARD_SECTIONS = (
    "Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations",
)
APPENDICES = (
    "Datasheets", "Explainability report", "Fairness report", "Validation report", "Monitoring report",
    "Approvals and signed statements", "Deployment history", "Human overrides", "Erasure tombstones",
)
NOT_RECORDED = "Not recorded in the ledger."
_UNPARSED = frozenset({Prediction.Made.TOPIC, Subject.KeyIssued.TOPIC})


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
        .where(*where).group_by(t.c.number, t.c.role).order_by(t.c.number, t.c.role)
    ).all()
    day = sa.func.substr(t.c.recorded_at, 1, 10)
    days = conn.execute(sa.select(day, counted).where(*where).group_by(day).order_by(day)).all()
    return {
        "by_version": [
            {"number": int(n), "role": role, "predictions": int(c), "outcomes": int(o or 0), "judged": int(j or 0),
             "correct": int(k or 0), "overridden": int(v or 0), "mean_latency_ms": float(lat or 0.0)}
            for n, role, c, o, j, k, v, lat in rows
        ],
        "per_day": [(str(d), int(c)) for d, c in days],
    }


def _open(rows: list[EventRow]) -> list[Recorded]:
    opened = []
    for row in rows:
        if row.topic in _UNPARSED:
            continue
        envelope = SealedEvent.from_record(row.record).envelope_fields()
        opened.append(Recorded(row.position, row.aggregate_id, row.topic, str(envelope["actor"]),
                               str(envelope["recorded_at"]), dict(envelope["payload"])))
    return opened


class ModelCard:
    """Builds the card and its appendices for one export."""

    def __init__(
        self,
        model: Model,
        versions: list[ModelVersion],
        rows: list[EventRow],
        manifests: dict[str, dict[str, Any]],
        statistics: dict[str, Any],
        scope: dict[str, Any],
        attachment_paths: dict[str, str],
    ) -> None:
        self.model, self.versions, self.manifests = model, versions, manifests
        self.statistics, self.scope, self.attachment_paths = statistics, scope, attachment_paths
        self.events = _open(rows)
        self.prediction_events = sum(1 for row in rows if row.topic == Prediction.Made.TOPIC)
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

    def document(self) -> Document:
        """The whole report: card sections, then appendices."""
        card = [
            self._details(), self._intended_use(), self._factors(), self._metrics(), self._evaluation_data(),
            self._training_data(), self._quantitative(), self._ethics(), self._caveats(),
        ]
        appendices = [
            self._datasheets(), self._explainability(), self._fairness(), self._validation(), self._monitoring(),
            self._approvals(), self._deployments(), self._overrides(), self._erasures(),
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

    # -- the card --------------------------------------------------------------
    def _run_doc(self, version: ModelVersion) -> dict[str, Any]:
        return self.manifests.get(version.run_id) or {}

    def _details(self) -> Section:
        policy = self.model.policy
        champion = self._current_champion()
        blocks: list[Any] = [Facts([
            ("Model", self.model.name),
            ("Versions", str(len(self.versions))),
            ("Champion now", f"version {champion}" if champion else "none"),
            ("Approval policy", f"{policy.required_approvals} approver(s); separation of duties "
                                f"{'on' if policy.separation_of_duties else 'off'}; one rejection "
                                f"{'blocks' if policy.rejection_blocks else 'does not block'} a version"),
            ("Fairness gate", "none" if policy.min_impact_ratio is None else
             f"approvals refused while a group's impact ratio is under {policy.min_impact_ratio}"),
            ("Retraining on drift", "requested automatically" if policy.retrain_on_drift else "not automatic"),
        ])]
        rows = []
        for v in self.versions:
            doc = self._run_doc(v)
            pipeline = (doc.get("inputs") or {}).get("pipeline") or {}
            spec = pipeline.get("spec") or {}
            rows.append([
                str(v.number), v.state(policy), self._who(v.registered_by), v.run_id,
                f"{pipeline.get('name') or 'client-reported'} ({pipeline.get('kind') or doc.get('mode') or '?'})",
                str(spec.get("estimator") or spec.get("hidden_layers") or "not recorded"),
                f"{v.artifact_name} {v.artifact_digest}",
            ])
        blocks.append(Table(["version", "state", "registered by", "source run", "pipeline", "estimator",
                             "artifact"], rows))
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
                    blocks.append(Para(f"Datasheet of {d.payload['name']} v{d.payload['number']}, {key}: "
                                       f"{sheet[key]}"))
        roles = Counter(e.topic for e in self._of(Deployment.ChampionSet.TOPIC, Deployment.ChallengerSet.TOPIC,
                                                   Deployment.CanarySet.TOPIC))
        if roles:
            blocks.append(Para("Deployed as: " + ", ".join(
                f"{topic.split('.')[2].removesuffix('Set').lower()} ({count} change(s))"
                for topic, count in sorted(roles.items()))))
        return Section("Intended use", blocks or [Para(NOT_RECORDED)])

    def _protected(self) -> dict[str, list[str]]:
        return {f"{d.payload['name']} v{d.payload['number']}": list(
            (d.payload.get("datasheet") or {}).get("protected_attributes") or []) for d in self.datasets}

    def _factors(self) -> Section:
        blocks: list[Any] = [Para(f"Protected attributes recorded in the datasheet of {name}: {', '.join(attrs)}.")
                             for name, attrs in self._protected().items() if attrs]
        for created, published in self._reports_of(FAIRNESS):
            names = [entry.get("name") for entry in published.payload["summary"].get("attributes") or []]
            blocks.append(Para(f"The fairness report of version {created.payload['number']} analyses: "
                               f"{', '.join(str(n) for n in names) or 'no attribute'}."))
        return Section("Factors", blocks or [Para(NOT_RECORDED)])

    def _metrics(self) -> Section:
        blocks: list[Any] = []
        for v in self.versions:
            final = (self._run_doc(v).get("outputs") or {}).get("metrics") or {}
            blocks.append(Heading(f"Version {v.number} (run {v.run_id})"))
            if not final:
                blocks.append(Para(NOT_RECORDED))
                continue
            blocks.append(Table(["metric", "final value", "step"],
                                [[k, _num(p["value"]), str(p["step"])] for k, p in sorted(final.items())]))
            history = self._metric_history(v.run_id)
            if any(len(points) > 1 for points in history.values()):
                blocks.append(self._figure(
                    f"metrics-v{v.number}.png",
                    plots.line_chart(f"{self.model.name} v{v.number}: metrics by step", history, "step", "value"),
                    f"Metrics of version {v.number} by step, as logged by its run.",
                ))
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
            evaluation = [a for a in (doc.get("outputs") or {}).get("artifacts") or []
                          if "eval" in a["name"] or "prediction" in a["name"]]
            if "validation_split" in spec or evaluation:
                text = f"Version {v.number}: "
                if "validation_split" in spec:
                    text += (f"a held-out split of {spec['validation_split']} of the training data, drawn with "
                             f"seed {inputs.get('seed')}. ")
                text += " ".join(f"Evaluation file {a['name']} ({a['digest']})." for a in evaluation)
                blocks.append(Para(text.strip()))
            else:
                blocks.append(Para(f"Version {v.number}: {NOT_RECORDED}"))
        return Section("Evaluation data", blocks or [Para(NOT_RECORDED)])

    def _training_data(self) -> Section:
        rows = [[f"{d.payload['name']} v{d.payload['number']}", str(d.payload["row_count"]), str(d.payload["size"]),
                 d.payload["format"], d.payload["digest"], d.payload["source"]] for d in self.datasets]
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
                blocks.append(Table(
                    ["group", "rows", "selection rate", "impact ratio", "TPR", "accuracy"],
                    [[str(g.get("group")), _num(g.get("n")), _num(g.get("selection_rate")),
                      _num(g.get("impact_ratio")), _num(g.get("tpr")), _num(g.get("accuracy"))] for g in groups],
                ))
                rated = [g for g in groups if isinstance(g.get("selection_rate"), (int, float))]
                if rated:
                    blocks.append(self._figure(
                        f"fairness-v{number}-{len(self.figures)}.png",
                        plots.bar_chart(f"Selection rate by {entry.get('name')}", [str(g["group"]) for g in rated],
                                        [float(g["selection_rate"]) for g in rated], "selection rate"),
                        f"Selection rate per group of {entry.get('name')} (version {number}).",
                    ))
        return Section("Quantitative analyses", blocks or [Para(NOT_RECORDED)])

    def _ethics(self) -> Section:
        blocks: list[Any] = []
        for d in self.datasets:
            pii = (d.payload.get("datasheet") or {}).get("pii_columns") or []
            if pii:
                blocks.append(Para(f"{d.payload['name']} v{d.payload['number']} holds personal data in: "
                                   f"{', '.join(pii)}."))
        erasures = self._of(Subject.Erased.TOPIC)
        overrides = self._of(Prediction.Overridden.TOPIC)
        if self.prediction_events:
            blocks.append(Para(
                "Inputs of identified data subjects are recorded encrypted with a key per subject; this bundle "
                f"carries ciphertext only. {len(erasures)} erasure(s) and {len(overrides)} human override(s) of "
                "decisions are recorded in this bundle."))
        policy = self.model.policy
        if policy.separation_of_duties:
            blocks.append(Para("Separation of duties: nobody who trained or registered a version may approve it."))
        return Section("Ethical considerations", blocks or [Para(NOT_RECORDED)])

    def _caveats(self) -> Section:
        blocks: list[Any] = []
        for e in self._of(Run.ReproductionDiverged.TOPIC):
            blocks.append(Para(f"Run {e.aggregate_id} did not reproduce (run {e.payload['reproduction_run_id']}): "
                               f"{_json(e.payload['differences'])[:500]}"))
        for e in self._of(DatasetVersion.Deprecated.TOPIC):
            blocks.append(Para(f"Dataset version {e.aggregate_id} was deprecated: {e.payload['reason']}"))
        for v in self.versions:
            if v.state(self.model.policy) == "rejected":
                blocks.append(Para(f"Version {v.number} was rejected by an approver."))
        alerts = self._of(Monitor.DriftDetected.TOPIC)
        if alerts:
            last = alerts[-1]
            blocks.append(Para(f"{len(alerts)} drift alert(s); the latest at {last.at} on version "
                               f"{last.payload['number']}: {', '.join(last.payload['drifted_features'])}."))
        for e in self._of(Deployment.Stopped.TOPIC):
            blocks.append(Para(f"The deployment was stopped at {e.at} by {e.actor}: {e.payload['reason']}"))
        return Section("Caveats and recommendations", blocks or [Para("No caveat was recorded in the ledger.")])

    # -- appendices ---------------------------------------------------------------
    def _datasheets(self) -> Section:
        blocks: list[Any] = []
        for d in self.datasets:
            p = d.payload
            blocks.append(Heading(f"{p['name']} v{p['number']}"))
            sheet = p.get("datasheet") or {}
            blocks.append(Facts([(k, v if isinstance(v, str) else ", ".join(map(str, v))) for k, v in sheet.items()]
                                or [("datasheet", NOT_RECORDED)]))
            blocks.append(Para(f"{len(p.get('schema') or [])} schema column(s), {len(p.get('profile') or [])} "
                               f"profiled column(s); registered by {d.actor} at {d.at}."))
        return Section("Datasheets", blocks or [Para(NOT_RECORDED)])

    def _report_blocks(self, kind: str) -> list[Any]:
        blocks: list[Any] = []
        for created, published in self._reports_of(kind):
            blocks.append(Heading(f"Version {created.payload['number']}, published {published.at}"))
            summary = published.payload["summary"]
            numeric = next(((k, v) for k, v in summary.items() if isinstance(v, dict) and len(v) > 1
                            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())),
                           None)
            if numeric is not None and kind == EXPLANATIONS:
                key, values = numeric
                top = sorted(values.items(), key=lambda kv: -abs(float(kv[1])))[:15]
                blocks.append(self._figure(
                    f"explanations-v{created.payload['number']}.png",
                    plots.bar_chart(f"{key} (top {len(top)})", [k for k, _ in top], [float(x) for _, x in top], key),
                    f"{key} from the published explanations report of version {created.payload['number']}.",
                ))
            blocks.append(Code(_json(summary)))
            rows = [[name, digest, self.attachment_paths.get(digest, "not in this bundle")]
                    for name, digest in sorted(published.payload["attachments"].items())]
            if rows:
                blocks.append(Table(["attachment", "digest", "file in this bundle"], rows))
        return blocks

    def _explainability(self) -> Section:
        return Section("Explainability report", self._report_blocks(EXPLANATIONS) or [Para(NOT_RECORDED)])

    def _fairness(self) -> Section:
        return Section("Fairness report", self._report_blocks(FAIRNESS) or [Para(NOT_RECORDED)])

    def _validation(self) -> Section:
        blocks: list[Any] = []
        for run_id, doc in sorted(self.manifests.items()):
            execution = doc.get("execution") or {}
            blocks.append(Heading(f"Run {run_id} ({doc.get('name')}): {doc.get('status')}"))
            blocks.append(Facts([
                ("device", str(execution.get("device") or "not recorded")),
                ("environment digest", str((doc.get("environment") or {}).get("digest") or "not recorded")),
                ("started / finished", f"{execution.get('started_at')} / {execution.get('finished_at')}"),
            ]))
            verdicts = doc.get("reproductions") or []
            blocks.append(Table(["reproduction run", "verdict", "method", "tolerance"],
                                [[r["run_id"], r["verdict"], str(r.get("method")), _num(r.get("tolerance"))]
                                 for r in verdicts]) if verdicts else Para("Reproduction: not recorded."))
        return Section("Validation report", blocks or [Para(NOT_RECORDED)])

    def _monitoring(self) -> Section:
        stats = self.statistics
        blocks: list[Any] = [Para("Prediction counts over the export window, from the ledger's predictions read "
                                  "model (all predictions of the window, whether or not this bundle carries them).")]
        rows = [[str(s["number"]), s["role"], str(s["predictions"]), str(s["outcomes"]),
                 f"{s['correct']}/{s['judged']}" if s["judged"] else "n/a", str(s["overridden"]),
                 _num(s["mean_latency_ms"])] for s in stats["by_version"]]
        blocks.append(Table(["version", "role", "predictions", "outcomes", "correct", "overridden",
                             "mean latency ms"], rows) if rows else Para("No prediction was recorded in the window."))
        if len(stats["per_day"]) > 1:
            blocks.append(self._figure("predictions-per-day.png", plots.line_chart(
                "Predictions per day", {"predictions": [(float(i), float(c)) for i, (_, c) in
                                                        enumerate(stats["per_day"])]}, "day index", "predictions"),
                f"Predictions per day from {stats['per_day'][0][0]} to {stats['per_day'][-1][0]}."))
        alerts = self._of(Monitor.DriftDetected.TOPIC)
        blocks.append(Table(["at", "version", "drifted features", "window", "retraining run"],
                            [[e.at, str(e.payload["number"]), ", ".join(e.payload["drifted_features"]),
                              json.dumps(e.payload["window"], sort_keys=True), str(e.payload["retraining_run_id"])]
                             for e in alerts]) if alerts else Para("Drift alerts: none recorded."))
        return Section("Monitoring report", blocks)

    def _approvals(self) -> Section:
        numbers = {str(v.id): v.number for v in self.versions}
        blocks: list[Any] = []
        for e in self._of(ModelVersion.ApprovalGranted.TOPIC, ModelVersion.ApprovalRejected.TOPIC):
            statement = e.payload["statement"]
            blocks.append(Heading(f"Version {numbers.get(e.aggregate_id)}: {statement['decision']} by "
                                  f"{self._who(e.payload['approver'])} at {e.at}"))
            blocks.append(Facts([("reason", str(statement["reason"])), ("signing key", e.payload["key_id"]),
                                 ("signature (Ed25519, base64)", e.payload["signature"])]))
            blocks.append(Code(_json(statement)))
        return Section("Approvals and signed statements", blocks or [Para(NOT_RECORDED)])

    def _deployments(self) -> Section:
        rows = [[e.at, e.topic.split(".")[2], str(e.payload.get("number", "")), _num(e.payload.get("share")),
                 str(e.payload.get("reason", "")), self._who(e.actor)]
                for e in self.events if e.topic.startswith("mlledger.deployment.")]
        if not rows:
            return Section("Deployment history", [Para(NOT_RECORDED)])
        return Section("Deployment history", [Table(["at", "change", "version", "share", "reason", "by"], rows)])

    def _overrides(self) -> Section:
        rows = [[e.at, e.aggregate_id, json.dumps(e.payload["decision"], sort_keys=True), e.payload["reason"],
                 self._who(e.actor)] for e in self._of(Prediction.Overridden.TOPIC)]
        if not rows:
            return Section("Human overrides", [Para("No override is recorded among this bundle's predictions.")])
        return Section("Human overrides", [Table(["at", "prediction", "decision", "reason", "by"], rows)])

    def _erasures(self) -> Section:
        rows = [[e.at, e.aggregate_id, e.payload["key_id"], e.payload["reason"], self._who(e.actor)]
                for e in self._of(Subject.Erased.TOPIC)]
        if not rows:
            return Section("Erasure tombstones", [Para("No erasure is recorded for this bundle's data subjects.")])
        return Section("Erasure tombstones", [Table(["at", "subject record", "key id", "reason", "by"], rows)])
