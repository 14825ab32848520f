"""Data drift: a reference profile of the training data, and windows of recent inputs against it.

The reference profile is recorded with the run that trained a model. Each
feature is either *numeric* (every non-missing value is a finite number, or a
string that reads as one, as CSV cells do) or *categorical* (everything else).

- A numeric feature keeps the inner edges of ``bins`` quantile bins (the outer
  edges are open, so only finite numbers are stored). Edges are values of the
  data (the inverted-CDF quantile) and equal ones are merged, so a discrete
  feature has at most one bin per value (and perhaps an empty one above its
  maximum, where larger values in a window will land).
  It also keeps the fraction of rows per bin, right-closed: bin ``i`` holds
  ``edges[i-1] < x <= edges[i]``, and
  ``quantile_points`` evenly spaced quantiles of the values, from minimum to
  maximum, which stand for the reference CDF in the Kolmogorov-Smirnov test.
- A categorical feature keeps the fraction of rows per category, the
  ``max_categories`` most frequent ones, the rest folded into ``__other__``.

Missing values are None, NaN, and blank or ``na``/``nan``/``null``/``none``
strings (as in dataset profiles); the fraction of missing rows is kept
per feature and is one more cell in every comparison, so a jump in missing values
is drift too. Fractions are of all rows: per numeric feature, the bin fractions
and the missing fraction sum to 1.

A window of recent inputs is compared feature by feature: the population
stability index over the cells (bins or categories, plus missing), and a test
of the distribution: Kolmogorov-Smirnov for numeric features, Pearson's
chi-squared for categorical ones. Both tests treat the reference as what it is,
a sample of ``n`` rows: the KS p-value comes from the Kolmogorov distribution at
the effective size ``n*m/(n+m)`` (as for the two-sample test), and the
chi-squared test is the two-sample test of homogeneity on the reference's
counts (fractions times ``n``) and the window's counts, so that a handful of
rows in a category the training data never had does not, alone, raise an alarm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from domain.errors import InvalidPayload
from domain.statistics.profile import is_missing

OTHER = "__other__"
PSI_EPSILON = 1e-4
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_P_THRESHOLD = 0.01
DEFAULT_MIN_ROWS = 30

Floats = NDArray[np.float64]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` fractions against ``expected`` ones, cell by cell.

    ``sum((a - e) * ln(a / e))``, where a fraction below ``epsilon`` counts as
    ``epsilon``, so an empty cell adds a large but finite term instead of an
    infinite one (and a cell empty on both sides adds nothing).
    """
    if len(expected) != len(actual) or not expected:
        raise InvalidPayload(
            f"psi needs two equally long, non-empty lists of fractions, got {len(expected)} and {len(actual)}",
            field="actual",
        )
    if not epsilon > 0:
        raise InvalidPayload(f"epsilon must be positive, got {epsilon!r}", field="epsilon")
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    for name, values in (("expected", e), ("actual", a)):
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise InvalidPayload(f"{name} fractions must be finite and non-negative", field=name)
    e, a = np.maximum(e, epsilon), np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class _Column:
    """One column split into its missing count and its present values."""

    n: int
    n_missing: int
    present: list[Any] | Floats


def _read(values: Sequence[Any], field: str) -> _Column:
    """Check a column's values (JSON scalars, no infinities) and set the missing ones apart."""
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise InvalidPayload(f"{field} must be one column, got an array of shape {values.shape}", field=field)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        numbers = np.asarray(values, dtype=np.float64)
        if np.any(np.isinf(numbers)):
            raise InvalidPayload(f"{field} holds an infinite number, which JSON cannot carry", field=field)
        present = numbers[~np.isnan(numbers)]
        return _Column(len(numbers), len(numbers) - len(present), present)
    kept: list[Any] = []
    for i, value in enumerate(values):
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None and not isinstance(value, str | int | float):
            raise InvalidPayload(
                f"{field}.{i} must be a string, number, boolean or null, got {type(value).__name__}",
                field=f"{field}.{i}",
            )
        if isinstance(value, float) and math.isinf(value):
            raise InvalidPayload(f"{field}.{i} is {value}, which JSON cannot carry", field=f"{field}.{i}")
        if not is_missing(value):
            kept.append(value)
    return _Column(len(values), len(values) - len(kept), kept)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _numbers(column: _Column) -> Floats | None:
    """The present values as floats, or None when one of them is not a number."""
    if isinstance(column.present, np.ndarray):
        return column.present
    out = np.empty(len(column.present), dtype=np.float64)
    for i, value in enumerate(column.present):
        number = _as_number(value)
        if number is None:
            return None
        out[i] = number
    return out


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _labels(column: _Column) -> list[str]:
    return [_category(v) for v in column.present]


def _bin_counts(numbers: Floats, edges: Sequence[float]) -> NDArray[np.int64]:
    return np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="left"), minlength=len(edges) + 1
    )


def _numeric_profile(n: int, n_missing: int, numbers: Floats, bins: int, quantile_points: int) -> dict[str, Any]:
    quantiles = np.maximum.accumulate(np.quantile(numbers, np.linspace(0.0, 1.0, quantile_points)))
    edges = (
        np.unique(np.quantile(numbers, np.arange(1, bins) / bins, method="inverted_cdf")) if bins > 1 else np.empty(0)
    )
    counts = _bin_counts(numbers, edges.tolist())
    return {
        "kind": "numeric",
        "n": n,
        "missing": n_missing / n,
        "edges": [float(e) for e in edges],
        "fractions": [int(c) / n for c in counts],
        "quantiles": [float(q) for q in quantiles],
    }


def _categorical_profile(n: int, n_missing: int, labels: list[str], max_categories: int) -> dict[str, Any]:
    counts = Counter(labels)
    other = counts.pop(OTHER, 0)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    other += sum(c for _, c in ranked[max_categories:])
    fractions = {label: c / n for label, c in sorted(ranked[:max_categories])}
    fractions[OTHER] = other / n
    return {"kind": "categorical", "n": n, "missing": n_missing / n, "fractions": fractions}


def _check_columns(columns: Mapping[str, Sequence[Any]], names: Sequence[str], field: str) -> int:
    """The common length of the named columns; refuse a missing or ragged one."""
    length: int | None = None
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidPayload(f"feature names must be non-empty strings, got {name!r}", field=field)
        if name not in columns:
            raise InvalidPayload(f"{field} has no column {name!r}", field=f"{field}.{name}")
        size = len(columns[name])
        if length is not None and size != length:
            raise InvalidPayload(f"{field}.{name} has {size} rows, the other columns {length}", field=f"{field}.{name}")
        length = size
    return length or 0


def reference_profile(
    columns: Mapping[str, Sequence[Any]], *, bins: int = 10, quantile_points: int = 101, max_categories: int = 50
) -> dict[str, Any]:
    """The reference profile of training data, feature by feature (see the module docstring).

    Returns ``{"n_rows", "bins", "quantile_points", "max_categories",
    "features": {name: feature profile}}``, JSON-ready and the same for the
    same input. Raises :class:`InvalidPayload` for no columns, no rows, ragged
    columns, values JSON cannot carry, or parameters out of range.
    """
    for name, value, least in (
        ("bins", bins, 1),
        ("quantile_points", quantile_points, 2),
        ("max_categories", max_categories, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise InvalidPayload(f"{name} must be an integer of at least {least}, got {value!r}", field=name)
    if not columns:
        raise InvalidPayload("a reference profile needs at least one column", field="columns")
    names = sorted(columns)
    n_rows = _check_columns(columns, names, "columns")
    if n_rows == 0:
        raise InvalidPayload("a reference profile needs at least one row", field="columns")
    features: dict[str, Any] = {}
    for name in names:
        column = _read(columns[name], f"columns.{name}")
        numbers = _numbers(column)
        if numbers is not None and len(numbers):
            features[name] = _numeric_profile(n_rows, column.n_missing, numbers, bins, quantile_points)
        else:
            features[name] = _categorical_profile(n_rows, column.n_missing, _labels(column), max_categories)
    return {
        "n_rows": n_rows,
        "bins": bins,
        "quantile_points": quantile_points,
        "max_categories": max_categories,
        "features": features,
    }


def _reference_cdf(quantiles: Sequence[float], points: Floats) -> tuple[Floats, Floats]:
    """The reference CDF at ``points`` and its left limits, from evenly spaced quantiles.

    Linear between distinct quantiles; a value repeated across several
    quantiles is a jump of the CDF (a point mass), from the lowest to the
    highest probability at which it occurs.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    p = np.linspace(0.0, 1.0, len(q))
    u = np.unique(q)
    hi = p[np.searchsorted(q, u, side="right") - 1]
    lo = p[np.searchsorted(q, u, side="left")]
    k = np.searchsorted(u, points, side="right") - 1
    kc = np.clip(k, 0, len(u) - 1)
    nxt = np.clip(k + 1, 0, len(u) - 1)
    at = (k >= 0) & (u[kc] == points)
    width = np.where(nxt > kc, u[nxt] - u[kc], 1.0)
    between = hi[kc] + (points - u[kc]) / width * (lo[nxt] - hi[kc])
    right = np.where(k < 0, 0.0, np.where(at, hi[kc], np.where(k >= len(u) - 1, 1.0, between)))
    left = np.where(at, lo[kc], right)
    return right, left


def _ks_statistic(numbers: Floats, quantiles: Sequence[float]) -> float:
    """Largest distance between the window's empirical CDF and the reference CDF."""
    xs = np.sort(numbers)
    points = np.union1d(xs, np.asarray(quantiles, dtype=np.float64))
    window_right = np.searchsorted(xs, points, side="right") / len(xs)
    window_left = np.searchsorted(xs, points, side="left") / len(xs)
    reference_right, reference_left = _reference_cdf(quantiles, points)
    return float(max(np.max(np.abs(window_right - reference_right)), np.max(np.abs(window_left - reference_left))))


def _compare_numeric(reference: Mapping[str, Any], column: _Column, field: str) -> dict[str, Any]:
    numbers = _numbers(column)
    if numbers is None:
        raise InvalidPayload(f"{field} holds a value that is not a number; the feature is numeric", field=field)
    fractions = [int(c) / column.n for c in _bin_counts(numbers, reference["edges"])]
    missing = column.n_missing / column.n
    value = psi([*reference["fractions"], reference["missing"]], [*fractions, missing])
    statistic = p_value = None
    if len(numbers):
        statistic = _ks_statistic(numbers, reference["quantiles"])
        n_reference = reference["n"] - round(reference["missing"] * reference["n"])
        effective = max(1, round(len(numbers) * n_reference / (len(numbers) + n_reference)))
        p_value = min(1.0, max(0.0, float(stats.kstwo.sf(statistic, effective))))
    return {
        "kind": "numeric",
        "psi": value,
        "test": "ks",
        "statistic": statistic,
        "p_value": p_value,
        "missing": missing,
        "fractions": fractions,
    }


def _compare_categorical(reference: Mapping[str, Any], column: _Column) -> dict[str, Any]:
    known = [label for label in reference["fractions"] if label != OTHER]
    counts = Counter(_labels(column))
    window = [counts.get(label, 0) for label in known]
    window += [len(column.present) - sum(window), column.n_missing]
    expected = [
        *(reference["fractions"][label] for label in known),
        reference["fractions"][OTHER],
        reference["missing"],
    ]
    value = psi(expected, [c / column.n for c in window])
    table = np.array([[round(f * reference["n"]) for f in expected], window], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    statistic, p_value = 0.0, 1.0
    if table.shape[1] > 1:
        result = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    fractions = {label: c / column.n for label, c in zip([*known, OTHER], window[:-1], strict=True)}
    return {
        "kind": "categorical",
        "psi": value,
        "test": "chi2",
        "statistic": statistic,
        "p_value": p_value,
        "missing": column.n_missing / column.n,
        "fractions": fractions,
    }


def compare_window(
    profile: Mapping[str, Any],
    window: Mapping[str, Sequence[Any]],
    *,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    p_threshold: float = DEFAULT_P_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> dict[str, Any]:
    """Compare a window of recent inputs with the reference profile, feature by feature.

    A feature has drifted when its PSI is above ``psi_threshold`` or its test's
    p-value below ``p_threshold``. Returns ``{"n_rows", "insufficient",
    "drifted", "drifted_features", "thresholds", "features"}``; a window of
    fewer than ``min_rows`` rows is ``insufficient``, with no features compared
    and nothing drifted. Columns the profile does not know are ignored; a
    profiled feature missing from the window raises :class:`InvalidPayload`
    naming it (``window.<feature>``), as do values JSON cannot carry and
    non-numbers in a numeric feature.
    """
    if not (isinstance(psi_threshold, int | float) and 0 < psi_threshold < math.inf):
        raise InvalidPayload(f"psi_threshold must be a positive number, got {psi_threshold!r}", field="psi_threshold")
    if not (isinstance(p_threshold, int | float) and 0 < p_threshold < 1):
        raise InvalidPayload(f"p_threshold must be in (0, 1), got {p_threshold!r}", field="p_threshold")
    if not isinstance(min_rows, int) or min_rows < 1:
        raise InvalidPayload(f"min_rows must be a positive integer, got {min_rows!r}", field="min_rows")
    features = profile.get("features")
    if not isinstance(features, Mapping) or not features:
        raise InvalidPayload("the profile has no features", field="profile.features")
    names = sorted(features)
    n_rows = _check_columns(window, names, "window")
    report: dict[str, Any] = {
        "n_rows": n_rows,
        "insufficient": n_rows < min_rows,
        "drifted": False,
        "drifted_features": [],
        "thresholds": {"psi": float(psi_threshold), "p_value": float(p_threshold), "min_rows": min_rows},
        "features": {},
    }
    if report["insufficient"]:
        return report
    for name in names:
        reference = features[name]
        column = _read(window[name], f"window.{name}")
        kind = reference.get("kind") if isinstance(reference, Mapping) else None
        if kind == "numeric":
            result = _compare_numeric(reference, column, f"window.{name}")
        elif kind == "categorical":
            result = _compare_categorical(reference, column)
        else:
            raise InvalidPayload(
                f"profile feature {name!r} has unknown kind {kind!r}", field=f"profile.features.{name}"
            )
        result["drifted"] = result["psi"] > psi_threshold or (
            result["p_value"] is not None and result["p_value"] < p_threshold
        )
        report["features"][name] = result
    report["drifted_features"] = [name for name in names if report["features"][name]["drifted"]]
    report["drifted"] = bool(report["drifted_features"])
    return report
