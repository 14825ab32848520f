"""Queries over the predictions read models: published reports of a version, and the
monitoring view of a model (serving figures, live accuracy per window of outcomes, drift alerts)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from domain.prediction import CHALLENGER
from projections.predictions import drift_alerts, model_reports, predictions


class ReportPublic(BaseModel):
    """A signed report about a model version, as published."""

    model_version_id: str
    model_name: str
    version: int
    kind: str
    summary: dict[str, Any]
    attachments: dict[str, str]
    """File name -> ``sha256:`` digest in the blob store, as the signed event names them."""
    computed_from: dict[str, Any]
    recorded_at: str
    position: int


def published_reports(
    conn: Connection, model_version_id: str, kinds: Iterable[str] | None = None
) -> dict[str, ReportPublic]:
    """The version's published reports by kind (a report created but not yet published is left out)."""
    t = model_reports
    query = sa.select(t).where(t.c.model_version_id == model_version_id, t.c.summary.is_not(None))
    if kinds is not None:
        query = query.where(t.c.kind.in_(tuple(kinds)))
    return {
        row.kind: ReportPublic(
            model_version_id=row.model_version_id,
            model_name=row.model_name,
            version=row.number,
            kind=row.kind,
            summary=json.loads(row.summary),
            attachments=json.loads(row.attachments or "{}"),
            computed_from=json.loads(row.computed_from or "{}"),
            recorded_at=row.recorded_at,
            position=row.position,
        )
        for row in conn.execute(query)
    }


class AccuracyWindow(BaseModel):
    """Live accuracy (or mean absolute error) over a window of predictions with outcomes."""

    version: int
    from_position: int
    to_position: int
    outcomes: int
    accuracy: float | None
    mean_absolute_error: float | None


class VersionServing(BaseModel):
    """Serving figures of one version (logged predictions included; latencies of those whose maker gave one)."""

    version: int
    role: str
    predictions: int
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    outcomes: int
    overrides: int


class DriftAlert(BaseModel):
    """A recorded ``DriftDetected``."""

    position: int
    version: int
    recorded_at: str
    drifted_features: list[str]
    statistics: dict[str, Any]
    window: dict[str, Any]
    retraining_run_id: str | None


class Monitoring(BaseModel):
    """Everything the monitoring page plots."""

    model_name: str
    window: int
    versions: list[VersionServing]
    live_accuracy: list[AccuracyWindow]
    drift_alerts: list[DriftAlert]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def monitoring(conn: Connection, model_name: str, window: int = 100, recent: int = 10_000) -> Monitoring:
    """Serving figures per version, live accuracy per window of outcomes, and drift alerts."""
    p = predictions
    rows = conn.execute(
        sa.select(
            p.c.number,
            p.c.role,
            p.c.latency_ms,
            p.c.correct,
            p.c.abs_error,
            p.c.outcome_position,
            p.c.overrides,
            p.c.position,
        )
        .where(p.c.model_name == model_name)
        .order_by(p.c.position.desc())
        .limit(recent)
    ).all()
    by_version: dict[tuple[int, str], list[Any]] = {}
    for row in rows:
        by_version.setdefault((row.number, "shadow" if row.role == CHALLENGER else "served"), []).append(row)
    versions = [
        VersionServing(
            version=number,
            role=role,
            predictions=len(group),
            latency_ms_p50=_percentile([r.latency_ms for r in group if r.latency_ms is not None], 0.5),
            latency_ms_p95=_percentile([r.latency_ms for r in group if r.latency_ms is not None], 0.95),
            outcomes=sum(1 for r in group if r.outcome_position is not None),
            overrides=sum(r.overrides for r in group),
        )
        for (number, role), group in sorted(by_version.items())
    ]
    accuracy: list[AccuracyWindow] = []
    for (number, role), group in sorted(by_version.items()):
        if role != "served":
            continue
        known = [r for r in reversed(group) if r.outcome_position is not None]
        for start in range(0, len(known), window):
            chunk = known[start : start + window]
            rights = [r.correct for r in chunk if r.correct is not None]
            errors = [r.abs_error for r in chunk if r.abs_error is not None]
            accuracy.append(
                AccuracyWindow(
                    version=number,
                    from_position=chunk[0].position,
                    to_position=chunk[-1].position,
                    outcomes=len(chunk),
                    accuracy=sum(rights) / len(rights) if rights else None,
                    mean_absolute_error=sum(errors) / len(errors) if errors else None,
                )
            )
    alerts = [
        DriftAlert(
            position=a.position,
            version=a.number,
            recorded_at=a.recorded_at,
            drifted_features=json.loads(a.drifted_features),
            statistics=json.loads(a.statistics),
            window=json.loads(a.window),
            retraining_run_id=a.retraining_run_id,
        )
        for a in conn.execute(
            sa.select(drift_alerts).where(drift_alerts.c.model_name == model_name).order_by(drift_alerts.c.position)
        )
    ]
    return Monitoring(
        model_name=model_name, window=window, versions=versions, live_accuracy=accuracy, drift_alerts=alerts
    )
