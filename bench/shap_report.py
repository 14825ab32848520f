"""Benchmark of SHAP explanations for a served gradient-boosting model (service/ml/explain.py).

Trains a 100-tree GradientBoostingClassifier (depth 3) on 1,000 rows x 30
features (``make_classification``, seeded), saves and loads it the way serving
does (``load_model`` of the pickled artifact), then reports:

* per-prediction explanations: seconds and rows/s to explain a 1,000-row batch
  with the tree explainer (target: well under 0.1 s, i.e. > 10,000 rows/s),
  plus reason codes for every row;
* the global report over the 1,000 rows (mean |SHAP|, bar and beeswarm PNGs,
  JSON and HTML): seconds (target: < 10 s).

Each figure is the best of ``REPEATS`` runs after one warm-up. The largest
additivity error (base value + contributions - model output) is printed too.

Run from the repository root: ``python bench/shap_report.py``.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier

from service.ml.explain import explainer_for, top_reason_codes
from service.ml.explain_report import global_report
from service.ml.model_loading import load_model

ROWS, FEATURES, TREES, REPEATS = 1_000, 30, 100, 5
BATCH_TARGET_S, REPORT_TARGET_S = 0.1, 10.0


def _best(action: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, Any]:
    action()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    """Train, load, explain a batch, build the global report; print the figures."""
    X, y = make_classification(n_samples=ROWS, n_features=FEATURES, n_informative=10, random_state=0)
    features = [f"x{i}" for i in range(FEATURES)]
    started = time.perf_counter()
    estimator = GradientBoostingClassifier(n_estimators=TREES, max_depth=3, random_state=0).fit(X, y)
    fit_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pkl"
        path.write_bytes(pickle.dumps(estimator, protocol=5))
        model = load_model(path, {"kind": "sklearn", "features": features, "classes": [0, 1], "positive_class": 1})
    rows = [dict(zip(features, map(float, row), strict=True)) for row in X]
    matrix = model.matrix(rows)

    started = time.perf_counter()
    explainer = explainer_for(model, matrix, seed=0)
    build_s = time.perf_counter() - started
    batch_s, explanations = _best(lambda: explainer.explain(matrix))
    contributions = np.asarray([e.contributions for e in explanations])
    codes_s, _ = _best(lambda: top_reason_codes(contributions, rows, features))  # as serving ranks a batch
    error = max(abs(e.base_value + sum(e.contributions) - e.output) for e in explanations)

    def full_report() -> tuple[Any, dict[str, Any], str]:
        report = global_report(explainer, matrix, features)
        return report, report.to_json(), report.to_html("GBM 100 trees")

    report_s, report = _best(full_report, repeats=3)

    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"model: GradientBoostingClassifier, {TREES} trees of depth 3, {ROWS} rows x {FEATURES} features "
        f"(fit {fit_s:.2f} s); explainer {explainer.name!r} ({explainer.output_space}), built in {build_s:.2f} s"
    )
    print(
        f"per-prediction explanations, 1,000-row batch: {batch_s * 1000:.1f} ms "
        f"({ROWS / batch_s:,.0f} rows/s; target < {BATCH_TARGET_S * 1000:.0f} ms) "
        f"{'OK' if batch_s < BATCH_TARGET_S else 'MISSED'}"
    )
    print(
        f"reason codes (top 4) for the batch: {codes_s * 1000:.1f} ms; "
        f"explain + reason codes: {ROWS / (batch_s + codes_s):,.0f} rows/s"
    )
    print(f"largest additivity error |base + sum(contributions) - log odds|: {error:.1e}")
    print(
        f"global report (mean |SHAP|, bar + beeswarm PNG, JSON, HTML) over {ROWS} rows: {report_s:.2f} s "
        f"(target < {REPORT_TARGET_S:.0f} s) {'OK' if report_s < REPORT_TARGET_S else 'MISSED'}"
    )
    top = report[1]["mean_abs_shap"][:3]
    print("top features: " + ", ".join(f"{t['feature']} {t['mean_abs_shap']:.3f}" for t in top))
    print(
        f"plots: bar {len(report[0].bar_png):,} bytes, beeswarm {len(report[0].beeswarm_png):,} bytes; "
        f"HTML {len(report[2]):,} characters"
    )


if __name__ == "__main__":
    main()
