"""Loading runner-produced models for serving: feature matrices, predictions as plain JSON, clear refusals."""

from __future__ import annotations

import csv
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from domain.errors import InvalidPayload
from service.ml.model_loading import LoadedModel, SklearnModel, TorchModel, UnsupportedModel, load_model
from service.runners.executors import ExecutionRequest, ExecutionResult, execute

FEATURES = [f"f{i}" for i in range(6)]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pickle(tmp_path: Path, model: Any, name: str = "model.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(model, protocol=5))
    return path


def _rows(X: np.ndarray, features: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(features, map(float, row), strict=True)) for row in X]


def _run(tmp_path: Path, kind: str, spec: dict[str, Any], dataset: Path) -> ExecutionResult:
    output = tmp_path / "out"
    output.mkdir()
    return execute(ExecutionRequest(kind, spec, {}, 7, "cpu", [dataset], None, output))


@pytest.fixture(scope="module")
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def binary_csv(tmp_path_factory: pytest.TempPathFactory, binary_data: tuple[np.ndarray, np.ndarray]) -> Path:
    X, y = binary_data
    rows = [[*map(float, x), int(label)] for x, label in zip(X, y, strict=True)]
    return _write_csv(tmp_path_factory.mktemp("data") / "binary.csv", [*FEATURES, "label"], rows)


@pytest.fixture(scope="module")
def colours_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(200):
        colour = ["red", "green", "blue"][i % 3]
        size = "" if i % 17 == 0 else round(float(rng.normal(10, 2)), 3)
        rows.append([colour, size, int(colour == "red")])
    return _write_csv(tmp_path_factory.mktemp("data") / "colours.csv", ["colour", "size", "is_red"], rows)


def test_a_pickled_gradient_boosting_classifier_serves_the_positive_class_probability(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = binary_data
    estimator = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y)
    details = {"kind": "sklearn", "features": FEATURES, "classes": [0, 1], "positive_class": 1}

    model = load_model(_pickle(tmp_path, estimator), details)
    out = model.predict(model.matrix(_rows(X[:20], FEATURES)))

    assert isinstance(model, SklearnModel)
    assert (model.kind, model.task, model.classes, model.positive_class) == ("sklearn", "classification", [0, 1], 1)
    assert [o["label"] for o in out] == estimator.predict(X[:20]).tolist()
    assert np.allclose([o["probability"] for o in out], estimator.predict_proba(X[:20])[:, 1], atol=1e-12)
    assert all(type(o["label"]) is int and type(o["probability"]) is float for o in out)
    json.dumps(out)


def test_a_multiclass_model_serves_every_class_probability_keyed_by_class_name(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(X, y)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

    model = load_model(_pickle(tmp_path, estimator), {"features": features})
    out = model.predict(model.matrix(_rows(X[::30], features)))

    assert model.classes == [0, 1, 2] and model.positive_class is None
    assert [o["label"] for o in out] == estimator.predict(X[::30]).tolist()
    for o, expected in zip(out, estimator.predict_proba(X[::30]), strict=True):
        assert list(o["probabilities"]) == ["0", "1", "2"]
        assert np.allclose(list(o["probabilities"].values()), expected)


def test_a_regressor_serves_plain_float_values(tmp_path: Path) -> None:
    X, y = make_regression(n_samples=200, n_features=6, random_state=0)
    estimator = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)

    model = load_model(_pickle(tmp_path, estimator), {"features": FEATURES, "kind": "sklearn"})
    out = model.predict(model.matrix(_rows(X[:5], FEATURES)))

    assert model.task == "regression" and model.classes is None
    assert [o["value"] for o in out] == pytest.approx(estimator.predict(X[:5]).tolist())
    assert all(type(o["value"]) is float for o in out)


def test_a_runner_pipeline_with_a_categorical_feature_scores_rows_like_the_pickled_pipeline(
    tmp_path: Path, colours_csv: Path
) -> None:
    spec = {
        "features": ["colour", "size"],
        "target": "is_red",
        "task": "classification",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "preprocessing": {"numeric": {"impute": "median", "scale": "standard"}, "categorical": {"one_hot": True}},
    }
    result = _run(tmp_path, "sklearn", spec, colours_csv)
    rows: list[dict[str, Any]] = [
        {"colour": "red", "size": 9.0},
        {"colour": "blue", "size": None},
        {"colour": "purple", "size": 11},
    ]

    model = load_model(result.model_file, result.details)
    X = model.matrix(rows)
    out = model.predict(X)

    assert model.categorical == ["colour"]
    assert X.dtype == object and X[0, 0] == "red" and np.isnan(X[1, 1]) and X[2, 1] == 11.0
    pipeline = pickle.loads(result.model_file.read_bytes())
    assert [o["label"] for o in out] == pipeline.predict(X).tolist() == [1, 0, 0]
    assert np.allclose([o["probability"] for o in out], pipeline.predict_proba(X)[:, 1])


def test_a_torch_model_saved_by_the_runner_reproduces_the_runner_predictions(tmp_path: Path, binary_csv: Path) -> None:
    spec = {"features": FEATURES, "target": "label", "task": "classification", "hidden_layers": [8], "epochs": 3}
    result = _run(tmp_path, "torch", spec, binary_csv)
    recorded = json.loads(result.predictions_file.read_text())
    with binary_csv.open() as handle:
        table = list(csv.DictReader(handle))
    rows = [{name: float(table[i][name]) for name in FEATURES} for i in recorded["ids"]]

    model = load_model(result.model_file, result.details)
    out = model.predict(model.matrix(rows))

    assert isinstance(model, TorchModel)
    assert (model.kind, model.task, model.classes, model.positive_class) == ("torch", "classification", [0, 1], 1)
    assert [o["probability"] for o in out] == pytest.approx(recorded["values"], abs=1e-6)
    assert all(o["label"] == (1 if o["probability"] > 0.5 else 0) for o in out)


def test_a_torch_regressor_undoes_the_target_standardisation(tmp_path: Path) -> None:
    X, y = make_regression(n_samples=200, n_features=6, noise=5.0, random_state=1)
    dataset = _write_csv(
        tmp_path / "reg.csv", [*FEATURES, "target"], [[*map(float, x), float(t)] for x, t in zip(X, y, strict=True)]
    )
    spec = {"features": FEATURES, "target": "target", "task": "regression", "hidden_layers": [8], "epochs": 3}
    result = _run(tmp_path, "torch", spec, dataset)
    recorded = json.loads(result.predictions_file.read_text())

    model = load_model(result.model_file, result.details)
    out = model.predict(model.matrix(_rows(X[recorded["ids"]], FEATURES)))

    assert model.task == "regression"
    assert [o["value"] for o in out] == pytest.approx(recorded["values"], rel=1e-5, abs=1e-4)


def test_concurrent_predictions_equal_serial_ones(tmp_path: Path, binary_csv: Path) -> None:
    spec = {"features": FEATURES, "target": "label", "task": "classification", "hidden_layers": [8], "epochs": 2}
    result = _run(tmp_path, "torch", spec, binary_csv)
    model = load_model(result.model_file, result.details)
    batches = [model.matrix(_rows(np.random.default_rng(i).normal(size=(50, 6)), FEATURES)) for i in range(16)]

    serial = [model.predict(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(model.predict, batches))

    assert concurrent == serial


# -- refusals ------------------------------------------------------------------------------------


def test_an_unknown_file_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07onnx-ish bytes")

    with pytest.raises(UnsupportedModel, match=r"unknown model format: model\.onnx"):
        load_model(path, {"features": FEATURES})


def test_a_pickle_that_is_not_an_estimator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="holds a dict, not a scikit-learn predictor"):
        load_model(_pickle(tmp_path, {"weights": [1, 2]}), {"features": FEATURES})


def test_details_that_disagree_with_the_model_are_refused(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = binary_data
    path = _pickle(tmp_path, LogisticRegression().fit(X, y))

    with pytest.raises(UnsupportedModel, match="takes 6 features, the run's details name 2"):
        load_model(path, {"features": ["a", "b"]})
    with pytest.raises(UnsupportedModel, match="classes"):
        load_model(path, {"features": FEATURES, "classes": ["no", "yes"]})
    with pytest.raises(UnsupportedModel, match="task 'regression'"):
        load_model(path, {"features": FEATURES, "task": "regression"})
    with pytest.raises(UnsupportedModel, match=r"the run is of the torch kind, but model\.pkl is a sklearn model"):
        load_model(path, {"features": FEATURES, "kind": "torch"})
    with pytest.raises(UnsupportedModel, match="must list its features"):
        load_model(path, {})


class _NotWeights:
    pass


def test_a_torch_file_holding_objects_beyond_plain_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "mlledger.mlp.v1", "payload": _NotWeights()}, path)

    with pytest.raises(UnsupportedModel, match="not a torch model file of plain weights"):
        load_model(path, {"features": FEATURES})


def test_a_torch_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "someone.else.v3", "state_dict": {}}, path)

    with pytest.raises(UnsupportedModel, match=r"is not an mlledger\.mlp\.v1 model"):
        load_model(path, {"features": FEATURES})


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory, binary_data: tuple[np.ndarray, np.ndarray]) -> LoadedModel:
    X, y = binary_data
    return load_model(_pickle(tmp_path_factory.mktemp("m"), LogisticRegression().fit(X, y)), {"features": FEATURES})


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({name: 1.0 for name in FEATURES[:-1]}, "rows.0.f5", "missing the feature 'f5'"),
        ({**{name: 1.0 for name in FEATURES}, "f2": "three"}, "rows.0.f2", "must be a number"),
        ({**{name: 1.0 for name in FEATURES}, "f3": True}, "rows.0.f3", "must be a number"),
    ],
)
def test_a_row_the_model_cannot_take_names_the_feature(
    small_model: LoadedModel, row: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidPayload, match=message) as caught:
        small_model.matrix([row])
    assert caught.value.field == field


def test_a_missing_value_the_estimator_cannot_handle_is_a_clear_error(small_model: LoadedModel) -> None:
    X = small_model.matrix([{**{name: 1.0 for name in FEATURES}, "f1": None}])

    with pytest.raises(InvalidPayload, match="the model cannot score these rows"):
        small_model.predict(X)
