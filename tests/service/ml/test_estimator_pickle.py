"""Runner-trained pickles are built from an allowlist of scikit-learn and NumPy types, and their trees checked."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.ml.estimator_pickle import load_estimator_pickle
from service.ml.model_loading import UnsupportedModel


class _RunsACommand:
    def __reduce__(self) -> Any:
        return (os.system, ("echo unpickled",))


class _Evaluates:
    def __reduce__(self) -> Any:
        return (eval, ("1 + 1",))


def _data() -> tuple[Any, Any]:
    return make_classification(200, 4, random_state=0)


@pytest.mark.parametrize(
    "estimator",
    [
        GradientBoostingClassifier(n_estimators=5, max_depth=2),
        RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0),
        LogisticRegression(),
        KNeighborsClassifier(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_runners_estimators_load_and_predict_as_trained(estimator: Any) -> None:
    X, y = _data()
    estimator.fit(X, y)

    loaded = load_estimator_pickle(pickle.dumps(estimator, protocol=5), "model.pkl")

    assert np.allclose(loaded.predict_proba(X[:20]), estimator.predict_proba(X[:20]))


def test_a_preprocessing_pipeline_with_categorical_columns_loads() -> None:
    X, y = _data()
    table = np.empty((len(X), 5), dtype=object)
    table[:, :4], table[:, 4] = X, np.where(y > 0, "a", "b")
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    preprocess = ColumnTransformer(
        [("numeric", numeric, [0, 1, 2, 3]), ("categorical", OneHotEncoder(handle_unknown="ignore"), [4])],
        sparse_threshold=0,
    )
    model = Pipeline([("preprocess", preprocess), ("model", GradientBoostingClassifier(n_estimators=5))]).fit(table, y)

    loaded = load_estimator_pickle(pickle.dumps(model, protocol=5), "model.pkl")

    assert (loaded.predict(table[:30]) == model.predict(table[:30])).all()


@pytest.mark.parametrize(
    ("payload", "named"),
    [(_RunsACommand(), "system"), (_Evaluates(), "builtins.eval"), (np.memmap, "memmap")],
    ids=["os.system", "eval", "numpy.memmap"],
)
def test_a_pickle_naming_anything_else_is_refused_without_running_it(payload: Any, named: str) -> None:
    with pytest.raises(UnsupportedModel) as refused:
        load_estimator_pickle(pickle.dumps(payload), "model.pkl")

    assert named in refused.value.detail


@pytest.mark.parametrize(
    "reexported",
    ["sklearn.utils.discovery\nPath", "sklearn.callback._transport\nThread", "sklearn.metrics._scorer\npartial"],
    ids=["pathlib.Path", "threading.Thread", "functools.partial"],
)
def test_a_class_of_another_library_reached_through_a_scikit_learn_module_is_refused(reexported: str) -> None:
    # protocol 0: GLOBAL module\nname, then an empty tuple, REDUCE, STOP
    payload = b"c" + reexported.encode() + b"\n(tR."

    with pytest.raises(UnsupportedModel) as refused:
        load_estimator_pickle(payload, "model.pkl")

    assert "is not a scikit-learn or NumPy type" in refused.value.detail


def test_a_pickled_forest_with_a_tree_child_beyond_its_nodes_is_refused() -> None:
    from sklearn.tree._tree import Tree

    X, y = _data()
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, y)
    tree = forest.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 50_000
    bad = Tree(tree.n_features, np.asarray(tree.n_classes), tree.n_outputs)
    bad.__setstate__({**state, "nodes": nodes})  # built, never walked
    forest.estimators_[0].tree_ = bad

    with pytest.raises(UnsupportedModel) as refused:
        load_estimator_pickle(pickle.dumps(forest, protocol=5), "model.pkl")

    assert "child index beyond" in refused.value.detail
