"""The appendices of a model card: datasheets, the published reports, validation, monitoring, approvals,
deployments, human overrides and erasure tombstones, each built only from what the ledger recorded.
"""

from __future__ import annotations

import json
from typing import Any

from domain.model import ModelVersion
from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.report import EXPLANATIONS, FAIRNESS
from domain.subject import Subject
from service.exports import plots
from service.exports.document import Code, Facts, Heading, Para, Section, Table
from service.exports.model_card_sections import NOT_RECORDED, CardSections, _json, _num

__all__ = ["CardAppendices"]


class CardAppendices(CardSections):
    """The card's sections (inherited) and the builders of its nine appendices."""

    def _datasheets(self) -> Section:
        blocks: list[Any] = []
        for d in self.datasets:
            p = d.payload
            blocks.append(Heading(f"{p['name']} v{p['number']}"))
            sheet = p.get("datasheet") or {}
            blocks.append(
                Facts(
                    [(k, v if isinstance(v, str) else ", ".join(map(str, v))) for k, v in sheet.items()]
                    or [("datasheet", NOT_RECORDED)]
                )
            )
            blocks.append(
                Para(
                    f"{len(p.get('schema') or [])} schema column(s), {len(p.get('profile') or [])} "
                    f"profiled column(s); registered by {d.actor} at {d.at}."
                )
            )
        return Section("Datasheets", blocks or [Para(NOT_RECORDED)])

    def _report_blocks(self, kind: str) -> list[Any]:
        blocks: list[Any] = []
        for created, published in self._reports_of(kind):
            blocks.append(Heading(f"Version {created.payload['number']}, published {published.at}"))
            summary = published.payload["summary"]
            numeric = next(
                (
                    (k, v)
                    for k, v in summary.items()
                    if isinstance(v, dict)
                    and len(v) > 1
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
                ),
                None,
            )
            if numeric is not None and kind == EXPLANATIONS:
                key, values = numeric
                top = sorted(values.items(), key=lambda kv: -abs(float(kv[1])))[:15]
                blocks.append(
                    self._figure(
                        f"explanations-v{created.payload['number']}.png",
                        plots.bar_chart(
                            f"{key} (top {len(top)})", [k for k, _ in top], [float(x) for _, x in top], key
                        ),
                        f"{key} from the published explanations report of version {created.payload['number']}.",
                    )
                )
            blocks.append(Code(_json(summary)))
            rows = [
                [name, digest, self.attachment_paths.get(digest, "not in this bundle")]
                for name, digest in sorted(published.payload["attachments"].items())
            ]
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
            blocks.append(
                Facts(
                    [
                        ("device", str(execution.get("device") or "not recorded")),
                        ("environment digest", str((doc.get("environment") or {}).get("digest") or "not recorded")),
                        ("started / finished", f"{execution.get('started_at')} / {execution.get('finished_at')}"),
                    ]
                )
            )
            verdicts = doc.get("reproductions") or []
            blocks.append(
                Table(
                    ["reproduction run", "verdict", "method", "tolerance"],
                    [[r["run_id"], r["verdict"], str(r.get("method")), _num(r.get("tolerance"))] for r in verdicts],
                )
                if verdicts
                else Para("Reproduction: not recorded.")
            )
        return Section("Validation report", blocks or [Para(NOT_RECORDED)])

    def _monitoring(self) -> Section:
        stats = self.statistics
        blocks: list[Any] = [
            Para(
                "Prediction counts over the export window, from the ledger's predictions read "
                "model (all predictions of the window, whether or not this bundle carries them)."
            )
        ]
        rows = [
            [
                str(s["number"]),
                s["role"],
                str(s["predictions"]),
                str(s["outcomes"]),
                f"{s['correct']}/{s['judged']}" if s["judged"] else "n/a",
                str(s["overridden"]),
                _num(s["mean_latency_ms"]),
            ]
            for s in stats["by_version"]
        ]
        blocks.append(
            Table(["version", "role", "predictions", "outcomes", "correct", "overridden", "mean latency ms"], rows)
            if rows
            else Para("No prediction was recorded in the window.")
        )
        if len(stats["per_day"]) > 1:
            blocks.append(
                self._figure(
                    "predictions-per-day.png",
                    plots.line_chart(
                        "Predictions per day",
                        {"predictions": [(float(i), float(c)) for i, (_, c) in enumerate(stats["per_day"])]},
                        "day index",
                        "predictions",
                    ),
                    f"Predictions per day from {stats['per_day'][0][0]} to {stats['per_day'][-1][0]}.",
                )
            )
        alerts = self._of(Monitor.DriftDetected.TOPIC)
        blocks.append(
            Table(
                ["at", "version", "drifted features", "window", "retraining run"],
                [
                    [
                        e.at,
                        str(e.payload["number"]),
                        ", ".join(e.payload["drifted_features"]),
                        json.dumps(e.payload["window"], sort_keys=True),
                        str(e.payload["retraining_run_id"]),
                    ]
                    for e in alerts
                ],
            )
            if alerts
            else Para("Drift alerts: none recorded.")
        )
        return Section("Monitoring report", blocks)

    def _approvals(self) -> Section:
        numbers = {str(v.id): v.number for v in self.versions}
        blocks: list[Any] = []
        for e in self._of(ModelVersion.ApprovalGranted.TOPIC, ModelVersion.ApprovalRejected.TOPIC):
            statement = e.payload["statement"]
            blocks.append(
                Heading(
                    f"Version {numbers.get(e.aggregate_id)}: {statement['decision']} by "
                    f"{self._who(e.payload['approver'])} at {e.at}"
                )
            )
            blocks.append(
                Facts(
                    [
                        ("reason", str(statement["reason"])),
                        ("signing key", e.payload["key_id"]),
                        ("signature (Ed25519, base64)", e.payload["signature"]),
                    ]
                )
            )
            blocks.append(Code(_json(statement)))
        return Section("Approvals and signed statements", blocks or [Para(NOT_RECORDED)])

    def _deployments(self) -> Section:
        rows = [
            [
                e.at,
                e.topic.split(".")[2],
                str(e.payload.get("number", "")),
                _num(e.payload.get("share")),
                str(e.payload.get("reason", "")),
                self._who(e.actor),
            ]
            for e in self.events
            if e.topic.startswith("mlledger.deployment.")
        ]
        if not rows:
            return Section("Deployment history", [Para(NOT_RECORDED)])
        return Section("Deployment history", [Table(["at", "change", "version", "share", "reason", "by"], rows)])

    def _overrides(self) -> Section:
        rows = [
            [
                e.at,
                e.aggregate_id,
                json.dumps(e.payload["decision"], sort_keys=True),
                e.payload["reason"],
                self._who(e.actor),
            ]
            for e in self._of(Prediction.Overridden.TOPIC)
        ]
        if not rows:
            return Section("Human overrides", [Para("No override is recorded among this bundle's predictions.")])
        return Section("Human overrides", [Table(["at", "prediction", "decision", "reason", "by"], rows)])

    def _erasures(self) -> Section:
        rows = [
            [e.at, e.aggregate_id, e.payload["key_id"], e.payload["reason"], self._who(e.actor)]
            for e in self._of(Subject.Erased.TOPIC)
        ]
        if not rows:
            return Section("Erasure tombstones", [Para("No erasure is recorded for this bundle's data subjects.")])
        return Section("Erasure tombstones", [Table(["at", "subject record", "key id", "reason", "by"], rows)])
