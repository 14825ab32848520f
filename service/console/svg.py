"""Pictures drawn on the server as inline SVG: the lineage graph and line charts.

Every piece of text is escaped here (names and reasons come from users), the
markup carries no script, style attribute or external reference, and colours
come from the console's stylesheet through class names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 210, 46, 56, 14, 12
CHART_W, CHART_H = 640, 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 56, 16, 14, 54
SERIES_CLASSES = ("s0", "s1", "s2", "s3", "s4", "s5")


@dataclass(frozen=True)
class Node:
    """A box of the lineage graph."""

    id: str
    kind: str
    """CSS class and the first line of the box (``dataset``, ``run``, ...)."""
    title: str
    subtitle: str = ""
    href: str | None = None


@dataclass
class Graph:
    """Columns of nodes drawn left to right, and the edges between them."""

    columns: list[list[Node]] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lineage_svg(graph: Graph, label: str) -> Markup:
    """The graph as an ``<svg>`` element: columns of boxes joined by arrows."""
    rows = max((len(column) for column in graph.columns), default=1)
    height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP
    width = PAD * 2 + len(graph.columns) * NODE_W + max(0, len(graph.columns) - 1) * COL_GAP
    where: dict[str, tuple[float, float]] = {}
    boxes: list[Markup] = []
    for c, column in enumerate(graph.columns):
        x = PAD + c * (NODE_W + COL_GAP)
        top = (height - (len(column) * NODE_H + (len(column) - 1) * ROW_GAP)) / 2
        for r, node in enumerate(column):
            y = top + r * (NODE_H + ROW_GAP)
            where[node.id] = (x, y)
            tooltip = f"{node.kind}: {node.title}" + (f" - {node.subtitle}" if node.subtitle else "")
            box = Markup(
                '<g class="node {kind}"><title>{tooltip}</title>'
                '<rect x="{x:.0f}" y="{y:.0f}" width="{w}" height="{h}" rx="5"/>'
                '<text x="{tx:.0f}" y="{t1:.0f}" class="t1">{title}</text>'
                '<text x="{tx:.0f}" y="{t2:.0f}" class="t2">{subtitle}</text></g>'
            ).format(
                kind=node.kind,
                tooltip=tooltip,
                x=x,
                y=y,
                w=NODE_W,
                h=NODE_H,
                tx=x + 8,
                t1=y + 18,
                t2=y + 35,
                title=_clip(node.title, 30),
                subtitle=_clip(node.subtitle, 34),
            )
            if node.href:
                box = Markup('<a href="{href}">{box}</a>').format(href=node.href, box=box)
            boxes.append(box)
    arrows: list[Markup] = []
    for source, target in graph.edges:
        if source in where and target in where:
            (x1, y1), (x2, y2) = where[source], where[target]
            arrows.append(
                Markup(
                    '<path class="edge" d="M{a:.0f},{b:.0f} C{c:.0f},{b:.0f} {d:.0f},{e:.0f} {f:.0f},{e:.0f}" '
                    'marker-end="url(#arrow)"/>'
                ).format(
                    a=x1 + NODE_W,
                    b=y1 + NODE_H / 2,
                    c=x1 + NODE_W + COL_GAP / 2,
                    d=x2 - COL_GAP / 2,
                    e=y2 + NODE_H / 2,
                    f=x2 - 6,
                )
            )
    return Markup(
        '<svg class="lineage" role="img" aria-label="{label}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="4" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>'
        "{arrows}{boxes}</svg>"
    ).format(label=label, w=width, h=height, arrows=Markup("").join(arrows), boxes=Markup("").join(boxes))


@dataclass(frozen=True)
class Series:
    """One line of a chart: (x, y) points, x ascending."""

    name: str
    points: Sequence[tuple[float, float]]


def _ticks(low: float, high: float, count: int = 4, integral: bool = False) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integral:  # ledger positions and counts: whole numbers only
        step = float(max(1, math.ceil(step)))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_chart(
    series: Sequence[Series],
    *,
    label: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    threshold: float | None = None,
) -> Markup:
    """A line chart as an ``<svg>`` element, with axes, ticks, a legend and an optional threshold line."""
    finite = [Series(s.name, [p for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]) for s in series]
    points = [p for s in finite for p in s.points]
    if not points:
        return Markup('<p class="muted">no data points yet</p>')
    xs, ys = [p[0] for p in points], [p[1] for p in points] + ([threshold] if threshold is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = CHART_W - MARGIN_L - MARGIN_R, CHART_H - MARGIN_T - MARGIN_B
    bottom = MARGIN_T + plot_h

    def sx(x: float) -> float:
        return MARGIN_L + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return MARGIN_T + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        Markup('<rect class="plot" x="{}" y="{}" width="{}" height="{}"/>').format(MARGIN_L, MARGIN_T, plot_w, plot_h)
    ]
    for tick in _ticks(y0, y1):
        parts.append(
            Markup(
                '<line class="grid" x1="{l}" x2="{r}" y1="{y:.1f}" y2="{y:.1f}"/>'
                '<text class="tick" x="{tx}" y="{ty:.1f}" text-anchor="end">{v}</text>'
            ).format(l=MARGIN_L, r=MARGIN_L + plot_w, y=sy(tick), tx=MARGIN_L - 6, ty=sy(tick) + 4, v=_fmt(tick))
        )
    for tick in _ticks(x0, x1, 5, integral=all(x == int(x) for x in xs)):
        parts.append(
            Markup('<text class="tick" x="{x:.1f}" y="{y}" text-anchor="middle">{v}</text>').format(
                x=sx(tick), y=bottom + 16, v=_fmt(tick)
            )
        )
    if threshold is not None:
        parts.append(
            Markup('<line class="threshold" x1="{l}" x2="{r}" y1="{y:.1f}" y2="{y:.1f}"/>').format(
                l=MARGIN_L, r=MARGIN_L + plot_w, y=sy(threshold)
            )
        )
    legend_x = MARGIN_L
    for i, s in enumerate(finite):
        if not s.points:
            continue
        css = SERIES_CLASSES[i % len(SERIES_CLASSES)]
        drawn = [(sx(x), sy(y)) for x, y in s.points]
        path = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(drawn))
        parts.append(Markup('<path class="line {}" d="{}"/>').format(css, path))
        parts.extend(
            Markup('<circle class="dot {}" cx="{:.1f}" cy="{:.1f}" r="2.5"/>').format(css, x, y) for x, y in drawn
        )
        parts.append(
            Markup(
                '<rect class="key {css}" x="{x}" y="{y}" width="10" height="10"/>'
                '<text class="legend" x="{tx}" y="{ty}">{name}</text>'
            ).format(css=css, x=legend_x, y=bottom + 36, tx=legend_x + 14, ty=bottom + 45, name=_clip(s.name, 28))
        )
        legend_x += 24 + 7 * min(len(s.name), 28)
    parts.append(
        Markup('<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>').format(
            MARGIN_L + plot_w, bottom + 45, x_label
        )
    )
    middle = MARGIN_T + plot_h / 2
    parts.append(
        Markup(
            '<text class="axis" x="12" y="{m:.0f}" text-anchor="middle" transform="rotate(-90 12 {m:.0f})">{t}</text>'
        ).format(m=middle, t=y_label)
    )
    return Markup(
        '<svg class="chart" role="img" aria-label="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{}</svg>'
    ).format(label, Markup("").join(parts), w=CHART_W, h=CHART_H)
