"""Plots for the reports, drawn with matplotlib's Agg renderer into PNG bytes.

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot), so no
global state is touched and exports may run in several threads at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], xlabel: str) -> bytes:
    """Horizontal bars, one per label, in the order given (first on top)."""
    figure = Figure(figsize=(7, max(1.6, 0.32 * len(labels) + 0.8)))
    axes = figure.subplots()
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, list(values), color="#4c72b0")
    axes.set_yticks(positions, [label if len(label) <= 40 else label[:37] + "..." for label in labels])
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> bytes:
    """One line per series of (x, y) points."""
    figure = Figure(figsize=(7, 3.4))
    axes = figure.subplots()
    for name, points in sorted(series.items()):
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o" if len(points) < 30 else None, label=name)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return _png(figure)
