"""The model page's monitoring and reports: live-accuracy and drift charts from
the predictions read model, and the signed explainability and fairness reports
of a version with their plots (read digest-checked from the blob store and
embedded as ``data:`` URIs, so the page loads nothing from elsewhere)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from sqlalchemy.engine import Connection

from domain.errors import LedgerError
from domain.report import EXPLANATIONS, FAIRNESS
from projections.prediction_queries import Monitoring, monitoring, published_reports
from service.console.svg import Series, line_chart
from service.store.blobs import BlobStore

MAX_PLOT_BYTES = 4 * 1024 * 1024


@dataclass
class MonitoringView:
    """Serving figures, the two charts and the drift alerts of a model."""

    figures: Monitoring
    accuracy_chart: Markup | None
    accuracy_measure: str
    drift_chart: Markup | None
    psi_threshold: float


def monitoring_view(conn: Connection, model_name: str, window: int, psi_threshold: float) -> MonitoringView:
    """Live accuracy per window of outcomes (per version) and PSI per feature at each drift alert."""
    figures = monitoring(conn, model_name, window)
    measure = "accuracy"
    by_version: dict[int, list[tuple[float, float]]] = {}
    for w in figures.live_accuracy:
        value = w.accuracy
        if value is None and w.mean_absolute_error is not None:
            measure, value = "mean absolute error", w.mean_absolute_error
        if value is not None:
            by_version.setdefault(w.version, []).append((float(w.to_position), value))
    accuracy_chart = None
    if by_version:
        accuracy_chart = line_chart(
            [Series(f"v{number}", points) for number, points in sorted(by_version.items())],
            label=f"live {measure} of {model_name}",
            x_label="ledger position (end of window)",
            y_label=measure,
            y_range=(0.0, 1.0) if measure == "accuracy" else None,
        )
    by_feature: dict[str, list[tuple[float, float]]] = {}
    for alert in figures.drift_alerts:
        for feature, stats in sorted(alert.statistics.items()):
            psi = stats.get("psi") if isinstance(stats, dict) else None
            if isinstance(psi, int | float):
                by_feature.setdefault(feature, []).append((float(alert.position), float(psi)))
    drift_chart = None
    if by_feature:
        drift_chart = line_chart(
            [Series(feature, points) for feature, points in sorted(by_feature.items())],
            label=f"population stability index per feature at each drift alert of {model_name}",
            x_label="ledger position of the alert",
            y_label="PSI",
            y_range=(0.0, max(psi_threshold, *(p[1] for s in by_feature.values() for p in s)) * 1.1),
            threshold=psi_threshold,
        )
    return MonitoringView(figures, accuracy_chart, measure, drift_chart, psi_threshold)


@dataclass
class ReportView:
    """One signed report of a version, with its plots ready to embed."""

    kind: str
    summary: dict[str, Any]
    computed_from: dict[str, Any]
    recorded_at: str
    position: int
    attachments: dict[str, str]
    images: dict[str, str] = field(default_factory=dict)
    """PNG attachment name -> ``data:image/png;base64,...``."""
    problems: list[str] = field(default_factory=list)
    """Attachments that could not be shown, and why (missing, changed on disk, too large)."""


def _data_uri(blobs: BlobStore, digest: str) -> str | None:
    data = b""
    for chunk in blobs.read_verified(digest):
        data += chunk
        if len(data) > MAX_PLOT_BYTES:
            return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def reports_of(conn: Connection, blobs: BlobStore, model_version_id: str) -> dict[str, ReportView]:
    """The published explainability and fairness reports of a version, by kind."""
    found: dict[str, ReportView] = {}
    for kind, report in published_reports(conn, model_version_id, (EXPLANATIONS, FAIRNESS)).items():
        view = ReportView(
            kind=kind,
            summary=report.summary,
            computed_from=report.computed_from,
            recorded_at=report.recorded_at,
            position=report.position,
            attachments=report.attachments,
        )
        for name, digest in sorted(view.attachments.items()):
            if not name.endswith(".png"):
                continue
            try:
                uri = _data_uri(blobs, digest)
            except LedgerError as exc:
                view.problems.append(f"{name}: {exc.detail}")
                continue
            if uri is None:
                view.problems.append(f"{name}: larger than {MAX_PLOT_BYTES // 1024 // 1024} MB, not embedded")
            else:
                view.images[name] = uri
        found[kind] = view
    return found
