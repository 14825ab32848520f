"""Validation metrics, computed the same way for every tabular kind.

Classification: accuracy, roc_auc (binary: on the positive-class probability;
multiclass: one-vs-rest macro), log_loss, and precision/recall per class.
Regression: rmse, mae, r2. A metric that cannot be computed (no probabilities,
a class absent from the validation rows) is left out and named in ``skipped``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray


def point(key: str, value: float, step: int) -> dict[str, Any]:
    """One metric point as the ledger records it."""
    return {"key": key, "value": float(value), "step": step}


def _keep(points: list[dict[str, Any]], skipped: list[str], key: str, value: float, step: int) -> None:
    if math.isfinite(value):
        points.append(point(key, value, step))
    else:
        skipped.append(key)


def classification_scores(
    y_true: NDArray[Any], y_pred: NDArray[Any], proba: NDArray[np.float64] | None, classes: list[Any], step: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Classification metric points and the names of those that could not be computed."""
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support, roc_auc_score

    points: list[dict[str, Any]] = []
    skipped: list[str] = []
    _keep(points, skipped, "accuracy", float(accuracy_score(y_true, y_pred)), step)
    if proba is None:
        skipped += ["roc_auc", "log_loss"]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if len(classes) == 2:
                    auc = roc_auc_score(y_true == classes[1], proba[:, 1])
                else:
                    auc = roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
                _keep(points, skipped, "roc_auc", float(auc), step)
            except ValueError:
                skipped.append("roc_auc")
            try:
                _keep(points, skipped, "log_loss", float(log_loss(y_true, proba, labels=classes)), step)
            except ValueError:
                skipped.append("log_loss")
    precision, recall, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    for label, p, r in zip(classes, precision, recall, strict=True):
        _keep(points, skipped, f"precision_{label}", float(p), step)
        _keep(points, skipped, f"recall_{label}", float(r), step)
    return points, skipped


def regression_scores(
    y_true: NDArray[np.float64], y_pred: NDArray[np.float64], step: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """rmse, mae and r2 points and the names of those that could not be computed."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    points: list[dict[str, Any]] = []
    skipped: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _keep(points, skipped, "rmse", math.sqrt(float(mean_squared_error(y_true, y_pred))), step)
        _keep(points, skipped, "mae", float(mean_absolute_error(y_true, y_pred)), step)
        _keep(points, skipped, "r2", float(r2_score(y_true, y_pred)), step)
    return points, skipped
