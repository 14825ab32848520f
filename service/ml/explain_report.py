"""A model version's global SHAP report: mean |SHAP| per feature, a bar and a beeswarm plot, an HTML page.

The plots are drawn with matplotlib's object API and the Agg canvas (no pyplot,
so no global figure state and no display), and saved without a "Software"
entry, so the same report gives the same PNG bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import InvalidPayload
from service.ml.explain import Matrix, ModelExplainer

__all__ = ["GlobalExplanation", "global_report"]

MAX_BEESWARM_ROWS = 5_000


@dataclass(frozen=True)
class GlobalExplanation:
    """A model version's global SHAP report: mean |SHAP| per feature and two plots.

    ``features`` and ``mean_abs_shap`` are sorted by importance (largest first,
    ties by name). The plots are PNG bytes; :meth:`to_json` names them by digest.
    """

    explainer: str
    output_space: str
    background_digest: str
    background_size: int
    n_rows: int
    base_value: float
    features: list[str]
    mean_abs_shap: list[float]
    bar_png: bytes
    beeswarm_png: bytes

    def plots(self) -> dict[str, bytes]:
        """The plots by name, as referenced in :meth:`to_json`."""
        return {"bar": self.bar_png, "beeswarm": self.beeswarm_png}

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values; plots by ``sha256:`` digest of their PNG bytes."""
        return {
            "explainer": self.explainer,
            "output_space": self.output_space,
            "background_digest": self.background_digest,
            "background_size": self.background_size,
            "n_rows": self.n_rows,
            "base_value": self.base_value,
            "mean_abs_shap": [
                {"feature": f, "mean_abs_shap": v} for f, v in zip(self.features, self.mean_abs_shap, strict=True)
            ],
            "plots": {name: _digest(png) for name, png in self.plots().items()},
        }

    def to_html(self, title: str) -> str:
        """A self-contained HTML page: the facts, both plots embedded as ``data:`` URIs, the table."""
        e = html.escape
        rows = "\n".join(
            f"<tr><td>{e(f)}</td><td>{v:.6g}</td></tr>" for f, v in zip(self.features, self.mean_abs_shap, strict=True)
        )
        facts = [
            ("Explainer", self.explainer),
            ("Output explained", self.output_space),
            ("Rows explained", str(self.n_rows)),
            ("Mean base value", f"{self.base_value:.6g}"),
            ("Background sample", f"{self.background_size} rows, {self.background_digest}"),
        ]
        facts_html = "\n".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2rem; color: #222; }}
dt {{ font-weight: bold; }} dd {{ margin: 0 0 0.5rem 0; font-family: monospace; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<dl>
{facts_html}
</dl>
<h2>Mean |SHAP| per feature</h2>
<img alt="Bar chart of mean absolute SHAP value per feature" src="{_data_uri(self.bar_png)}">
<h2>SHAP values per row</h2>
<img alt="Beeswarm plot of SHAP values per feature, coloured by feature value" src="{_data_uri(self.beeswarm_png)}">
<h2>Table</h2>
<table>
<thead><tr><th>Feature</th><th>Mean |SHAP|</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def global_report(
    explainer: ModelExplainer, X: Matrix, features: list[str], *, max_display: int = 20
) -> GlobalExplanation:
    """Explain every row of ``X`` and summarise: mean |SHAP| per feature, a bar and a beeswarm plot.

    Meant for off the request path (after registration). With more than two
    classes each row contributes its predicted class's explanation. The plots
    show the ``max_display`` most important features; the bar plot sums the rest.
    """
    if len(features) != len(explainer.features):
        raise InvalidPayload(f"{len(features)} feature names for a model of {len(explainer.features)} features")
    if isinstance(max_display, bool) or not isinstance(max_display, int) or max_display < 1:
        raise InvalidPayload(f"max_display must be a positive integer, got {max_display!r}", field="max_display")
    X = np.asarray(X)
    if len(X) == 0:
        raise InvalidPayload("a global report needs at least one row", field="X")
    contributions, base = explainer.attributions(X)
    mean_abs = np.abs(contributions).mean(axis=0)
    order = sorted(range(len(features)), key=lambda j: (-mean_abs[j], features[j]))
    shown = order[:max_display]
    values = _numeric_values(X, [name in set(explainer.categorical) for name in features])
    space = explainer.output_space
    return GlobalExplanation(
        explainer=explainer.name,
        output_space=space,
        background_digest=explainer.background_digest,
        background_size=explainer.background_size,
        n_rows=len(X),
        base_value=float(base.mean()),
        features=[features[j] for j in order],
        mean_abs_shap=[float(mean_abs[j]) for j in order],
        bar_png=_bar_png(
            [features[j] for j in shown],
            mean_abs[shown],
            float(mean_abs[order[max_display:]].sum()),
            len(order) - len(shown),
            space,
        ),
        beeswarm_png=_beeswarm_png([features[j] for j in shown], contributions[:, shown], values[:, shown], space),
    )


def _numeric_values(X: Matrix, categorical: list[bool]) -> NDArray[np.float64]:
    """Feature values for colouring: numbers as floats, categories as NaN (drawn grey)."""
    out = np.full(X.shape, np.nan)
    for j, is_categorical in enumerate(categorical):
        if not is_categorical:
            out[:, j] = np.asarray(X[:, j], dtype=np.float64)
    return out


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the same figure gives the same bytes whatever the matplotlib version.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _bar_png(names: list[str], values: NDArray[np.float64], rest: float, n_rest: int, space: str) -> bytes:
    from matplotlib.figure import Figure

    labels, heights = list(names), [float(v) for v in values]
    if n_rest:
        labels.append(f"Sum of {n_rest} other features")
        heights.append(rest)
    figure = Figure(figsize=(8, 0.4 * len(labels) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(labels))[::-1]
    axes.barh(positions, heights, color="#1e88e5")
    axes.set_yticks(positions, labels)
    for y, height in zip(positions, heights, strict=True):
        axes.text(height, y, f" {height:.3g}", va="center", fontsize=8)
    axes.set_xlabel(f"mean(|SHAP value|) ({space})")
    axes.spines[["top", "right"]].set_visible(False)
    axes.margins(x=0.15)
    return _png(figure)


def _beeswarm_offsets(values: NDArray[np.float64], bins: int = 100, height: float = 0.4) -> NDArray[np.float64]:
    """Vertical offsets that stack points falling in the same bin alternately above and below the line."""
    span = float(values.max() - values.min()) if len(values) else 0.0
    quantized = (
        np.zeros(len(values), dtype=np.int64)
        if span == 0
        else np.floor((values - values.min()) / span * (bins - 1)).astype(np.int64)
    )
    order = np.lexsort((values, quantized))
    offsets = np.zeros(len(values))
    layer, previous = 0, -1
    for index in order:
        layer = layer + 1 if quantized[index] == previous else 0
        previous = quantized[index]
        offsets[index] = math.ceil(layer / 2) * (1 if layer % 2 else -1)
    peak = np.abs(offsets).max() if len(offsets) else 0
    return offsets * (height / peak) if peak else offsets


def _beeswarm_png(names: list[str], shap_values: NDArray[np.float64], values: NDArray[np.float64], space: str) -> bytes:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    rows = len(shap_values)
    if rows > MAX_BEESWARM_ROWS:  # evenly spaced rows keep the picture and the bytes deterministic
        keep = np.linspace(0, rows - 1, MAX_BEESWARM_ROWS).astype(np.int64)
        shap_values, values = shap_values[keep], values[keep]
    colormap = mpl.colormaps["coolwarm"]
    figure = Figure(figsize=(8, 0.4 * len(names) + 1.5), layout="constrained")
    axes = figure.add_subplot()
    axes.axvline(0, color="#999999", linewidth=0.8)
    if np.isnan(values).any():
        axes.set_title("grey: categorical or missing value", fontsize=8, loc="right", color="#666666")
    for position, j in zip(range(len(names) - 1, -1, -1), range(len(names)), strict=True):
        x, colour_values = shap_values[:, j], values[:, j]
        y = position + _beeswarm_offsets(x)
        known = ~np.isnan(colour_values)
        if (~known).any():
            axes.scatter(x[~known], y[~known], s=8, color="#888888", linewidths=0)
        if known.any():
            low, high = np.percentile(colour_values[known], [5, 95])
            if high <= low:
                low, high = float(colour_values[known].min()), float(colour_values[known].max())
            scale = (
                (np.clip(colour_values[known], low, high) - low) / (high - low)
                if high > low
                else np.full(int(known.sum()), 0.5)
            )
            axes.scatter(x[known], y[known], s=8, c=colormap(scale), linewidths=0)
    axes.set_yticks(range(len(names) - 1, -1, -1), names)
    axes.set_ylim(-0.7, len(names) - 0.3)
    axes.set_xlabel(f"SHAP value ({space})")
    axes.spines[["top", "right"]].set_visible(False)
    bar = figure.colorbar(mpl.cm.ScalarMappable(cmap=colormap), ax=axes, ticks=[0, 1], aspect=40, pad=0.02)
    bar.set_ticklabels(["Low", "High"])
    bar.set_label("Feature value")
    bar.outline.set_visible(False)
    return _png(figure)
