"""TreeSHAP by decision region: the values shap computes, for every kind of shallow tree ensemble."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shap
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.tree import DecisionTreeRegressor

from service.ml import tree_regions
from service.ml.explain import explainer_for
from service.ml.model_loading import load_model
from service.ml.tree_regions import region_table


def _explainer(model: Any) -> Any:
    return shap.TreeExplainer(model, feature_perturbation="tree_path_dependent", model_output="raw")


def _probe_rows(explainer: Any, X: np.ndarray, seed: int) -> np.ndarray:
    """Random rows, training rows, and rows sitting exactly on (and a float32 step from) every threshold."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(scale=X.std(axis=0) * 1.5, size=(200, X.shape[1])), X[:50]]
    for tree in explainer.model.trees[:5]:
        internal = tree.children_left >= 0
        for feature, cut in zip(tree.features[internal], tree.thresholds[internal], strict=True):
            for value in (cut, np.float32(cut), np.nextafter(np.float32(cut), np.float32(np.inf))):
                row = X[0].copy()
                row[feature] = value
                rows.append(row[None, :])
    return np.vstack(rows)


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(
            lambda X, y: GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(X, y),
            id="gradient-boosting-classifier",
        ),
        pytest.param(
            lambda X, y: GradientBoostingRegressor(n_estimators=30, max_depth=2, random_state=0).fit(X, y),
            id="gradient-boosting-regressor",
        ),
        pytest.param(
            lambda X, y: RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(X, y),
            id="random-forest-classifier",
        ),
        pytest.param(
            lambda X, y: ExtraTreesRegressor(n_estimators=10, max_depth=3, random_state=0).fit(X, y),
            id="extra-trees-regressor",
        ),
        pytest.param(lambda X, y: DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y), id="decision-tree"),
        pytest.param(
            lambda X, y: HistGradientBoostingClassifier(max_iter=20, max_depth=3, random_state=0).fit(X, y),
            id="hist-gradient-boosting",
        ),
    ],
)
def test_looked_up_values_are_the_values_shap_computes(make_model: Any) -> None:
    X, y = make_classification(n_samples=300, n_features=8, n_informative=4, random_state=1)
    explainer = _explainer(make_model(X, y))
    table = region_table(explainer.model.trees, explainer.model.input_dtype, X.shape[1])
    assert table is not None
    rows = _probe_rows(explainer, X, seed=2)
    expected = np.asarray(explainer.shap_values(rows, check_additivity=False))
    for chunk in (rows, rows[:3]):  # the sparse product and the dense gather
        looked_up = table.shap_values(chunk)
        assert looked_up.shape == expected[: len(chunk)].shape
        np.testing.assert_allclose(looked_up, expected[: len(chunk)], rtol=0, atol=1e-9)


def test_each_tree_has_at_most_two_regions_per_split() -> None:
    X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    explainer = _explainer(GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(X, y))
    table = region_table(explainer.model.trees, explainer.model.input_dtype, X.shape[1])
    assert table is not None
    assert table.regions <= 10 * 2**7


def test_trees_with_too_many_regions_get_no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = make_regression(n_samples=300, n_features=5, random_state=0)
    explainer = _explainer(DecisionTreeRegressor(max_depth=8, random_state=0).fit(X, y))
    monkeypatch.setattr(tree_regions, "MAX_REGIONS_PER_TREE", 64)
    assert region_table(explainer.model.trees, explainer.model.input_dtype, X.shape[1]) is None


def test_a_table_over_the_size_limit_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = make_regression(n_samples=300, n_features=5, random_state=0)
    explainer = _explainer(GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(X, y))
    monkeypatch.setattr(tree_regions, "MAX_TABLE_VALUES", 100)
    assert region_table(explainer.model.trees, explainer.model.input_dtype, X.shape[1]) is None


def test_rows_with_missing_values_are_explained_by_shap_itself(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=4, n_informative=3, n_redundant=0, random_state=3)
    X[::7, 1] = np.nan  # the trees learn a default direction for missing values
    estimator = HistGradientBoostingClassifier(max_iter=15, max_depth=3, random_state=0).fit(X, y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(estimator, protocol=5))
    model = load_model(path, {"features": [f"f{i}" for i in range(4)]})
    rows = X[:40]
    contributions, base, out, _ = explainer_for(model, X).explain_arrays(rows)
    np.testing.assert_allclose(base + contributions.sum(axis=1), out, atol=1e-6)
    expected = _explainer(estimator).shap_values(rows, check_additivity=False)
    np.testing.assert_allclose(contributions, np.asarray(expected), atol=1e-9)


def test_a_large_matrix_is_explained_in_chunks_with_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = make_regression(n_samples=300, n_features=5, random_state=0)
    explainer = _explainer(GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(X, y))
    table = region_table(explainer.model.trees, explainer.model.input_dtype, X.shape[1])
    assert table is not None
    whole = table.shap_values(X)
    monkeypatch.setattr(tree_regions, "_CHUNK_ROWS", 64)

    chunked = table.shap_values(X)

    assert chunked.shape == whole.shape == (300, 5)
    np.testing.assert_array_equal(chunked, whole)
