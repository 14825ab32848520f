"""Fairness of a model version's decisions, group by group, on its validation data.

For each protected attribute (and each pair of them, for intersections) the
report gives every group's selection rate, its impact ratio, its true-positive
rate and its accuracy. The impact ratio follows NYC Local Law 144: a group's
selection rate divided by the highest selection rate among the groups compared.
Groups holding less than ``min_share`` of the rows (2% by default, as the law
allows) are reported but take no part in the ratio: neither as the reference
nor as a group with a ratio of its own, nor in the per-attribute differences.

Group labels are strings. A value's label is the string itself, ``true`` /
``false`` for booleans, and the decimal form for numbers; a missing value
(None, NaN, a blank string or one of ``na``, ``nan``, ``null``, ``none``, as in
dataset profiles) is the group ``(missing)``. An intersection group is labelled
``race=B & sex=F`` and also carries ``values``, the attribute-to-label mapping,
which stays unambiguous whatever characters the labels contain.

The report is JSON-ready: only dicts, lists, strings, booleans, ints, finite
floats and None, with None wherever a number is undefined (the true-positive
rate of a group with no actual positives, a ratio when the highest selection
rate is 0). Nothing is rounded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from domain.errors import InvalidPayload
from domain.statistics.profile import is_missing

DEFAULT_MIN_IMPACT_RATIO = 0.8
DEFAULT_MIN_SHARE = 0.02
MISSING_GROUP = "(missing)"


def _scalar(value: Any, field: str) -> Any:
    """``value`` as a plain JSON scalar (numpy scalars unwrapped); refuse anything else."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return value
        if math.isinf(value):
            raise InvalidPayload(f"{field} is {value}, which JSON cannot carry", field=field)
        return value
    raise InvalidPayload(f"{field} must be a string, number, boolean or null, got {type(value).__name__}", field=field)


def group_label(value: Any) -> str:
    """The label of the group a value belongs to (see the module docstring)."""
    if is_missing(value):
        return MISSING_GROUP
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _labels(y: Sequence[Any], field: str) -> list[Any]:
    """The outcome labels, checked: JSON scalars, no NaN."""
    out = []
    for i, raw in enumerate(y):
        value = _scalar(raw, f"{field}.{i}")
        if isinstance(value, float) and math.isnan(value):
            raise InvalidPayload(f"{field}.{i} is NaN; every row needs a label", field=f"{field}.{i}")
        out.append(value)
    return out


def _group_stats(
    keys: Sequence[tuple[str, ...]],
    names: Sequence[str],
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    positive: Any,
    min_share: float,
) -> dict[str, Any]:
    """The report entry for one attribute or one intersection of attributes."""
    tallies: dict[tuple[str, ...], list[int]] = {}
    for key, truth, pred in zip(keys, y_true, y_pred, strict=True):
        tally = tallies.setdefault(key, [0, 0, 0, 0, 0])
        selected, actual = pred == positive, truth == positive
        tally[0] += 1
        tally[1] += selected
        tally[2] += actual
        tally[3] += selected and actual
        tally[4] += truth == pred
    n_rows = len(keys)

    def label(key: tuple[str, ...]) -> str:
        return key[0] if len(names) == 1 else " & ".join(f"{a}={v}" for a, v in zip(names, key, strict=True))

    groups: list[dict[str, Any]] = []
    for key in sorted(tallies, key=label):
        n, selected, positives, true_positives, correct = tallies[key]
        groups.append(
            {
                "group": label(key),
                "values": dict(zip(names, key, strict=True)),
                "n": n,
                "share": n / n_rows,
                "selected": selected,
                "selection_rate": selected / n,
                "positives": positives,
                "true_positives": true_positives,
                "tpr": true_positives / positives if positives else None,
                "accuracy": correct / n,
                "excluded": n / n_rows < min_share,
                "impact_ratio": None,
            }
        )

    compared = [g for g in groups if not g["excluded"]]
    highest = max((g["selection_rate"] for g in compared), default=None)
    if highest:
        for g in compared:
            g["impact_ratio"] = g["selection_rate"] / highest
    ratios = [g["impact_ratio"] for g in compared if g["impact_ratio"] is not None]
    tprs = [g["tpr"] for g in compared if g["tpr"] is not None]
    accuracies = [g["accuracy"] for g in compared]
    return {
        "name": " & ".join(names),
        "attributes": list(names),
        "groups": groups,
        "highest_selection_rate": highest,
        "min_impact_ratio": min(ratios, default=None),
        "tpr_difference": max(tprs) - min(tprs) if tprs else None,
        "accuracy_difference": max(accuracies) - min(accuracies) if accuracies else None,
    }


def fairness_report(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    attributes: Mapping[str, Sequence[Any]],
    *,
    positive: Any,
    min_share: float = DEFAULT_MIN_SHARE,
    intersections: bool = True,
) -> dict[str, Any]:
    """Selection rate, impact ratio, TPR and accuracy per group of each protected attribute.

    ``y_true`` are the actual outcomes, ``y_pred`` the model's decisions and
    ``attributes`` the protected columns of the same rows; a row is *selected*
    when its decision equals ``positive``. Attributes come out sorted by name
    under ``attributes``; when ``intersections`` is true every unordered pair of
    them (``"race & sex"``) comes out under ``intersections``, with the groups
    that occur in the data. Groups are sorted by label. Raises
    :class:`InvalidPayload` naming the field for empty or ragged input, values
    JSON cannot carry, a ``min_share`` outside [0, 1), or a ``positive`` label
    that occurs neither in ``y_true`` nor in ``y_pred``.
    """
    if not isinstance(min_share, int | float) or not 0 <= min_share < 1:
        raise InvalidPayload(f"min_share must be in [0, 1), got {min_share!r}", field="min_share")
    positive = _scalar(positive, "positive")
    if positive is None or (isinstance(positive, float) and math.isnan(positive)):
        raise InvalidPayload("positive must be a label, not null or NaN", field="positive")
    if len(y_true) == 0:
        raise InvalidPayload("a fairness report needs at least one row", field="y_true")
    if len(y_pred) != len(y_true):
        raise InvalidPayload(f"y_pred has {len(y_pred)} rows, y_true has {len(y_true)}", field="y_pred")
    if not attributes:
        raise InvalidPayload("a fairness report needs at least one protected attribute", field="attributes")
    truths, preds = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if positive not in truths and positive not in preds:
        raise InvalidPayload(f"the positive label {positive!r} occurs in neither y_true nor y_pred", field="positive")

    columns: dict[str, list[str]] = {}
    for name in sorted(attributes):
        if not isinstance(name, str) or not name:
            raise InvalidPayload(f"attribute names must be non-empty strings, got {name!r}", field="attributes")
        values = attributes[name]
        field = f"attributes.{name}"
        if len(values) != len(truths):
            raise InvalidPayload(f"{field} has {len(values)} rows, y_true has {len(truths)}", field=field)
        columns[name] = [group_label(_scalar(v, f"{field}.{i}")) for i, v in enumerate(values)]

    report: dict[str, Any] = {
        "n_rows": len(truths),
        "positive": positive,
        "min_share": float(min_share),
        "attributes": [
            _group_stats([(v,) for v in column], [name], truths, preds, positive, min_share)
            for name, column in columns.items()
        ],
        "intersections": [],
    }
    if intersections:
        report["intersections"] = [
            _group_stats(list(zip(columns[a], columns[b], strict=True)), [a, b], truths, preds, positive, min_share)
            for a, b in itertools.combinations(columns, 2)
        ]
    return report


def impact_ratio_violations(
    report: Mapping[str, Any], threshold: float = DEFAULT_MIN_IMPACT_RATIO
) -> list[dict[str, Any]]:
    """Every compared group whose impact ratio is below ``threshold``, lowest ratio first.

    Looks at attributes and intersections alike; excluded groups (under the
    report's ``min_share``) and groups without a ratio are never violations.
    Each item is ``{"attribute", "group", "values", "selection_rate",
    "impact_ratio"}``.
    """
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise InvalidPayload(f"threshold must be in [0, 1], got {threshold!r}", field="threshold")
    found = [
        {
            "attribute": entry["name"],
            "group": group["group"],
            "values": group["values"],
            "selection_rate": group["selection_rate"],
            "impact_ratio": group["impact_ratio"],
        }
        for entry in [*report.get("attributes", []), *report.get("intersections", [])]
        for group in entry["groups"]
        if not group["excluded"] and group["impact_ratio"] is not None and group["impact_ratio"] < threshold
    ]
    return sorted(found, key=lambda v: (v["impact_ratio"], v["attribute"], v["group"]))
