"""The sklearn kind: fit a scikit-learn estimator named by the spec on tabular data.

Only a class inside the ``sklearn.`` namespace that is a scikit-learn estimator
can be named, so a spec cannot reach ``os.system`` or ``builtins.eval``. Run
params are estimator params merged over ``spec.estimator_params``; their names
are checked against the estimator's ``get_params()`` and their types loosely
against its defaults. The fitted model (with its preprocessing, when declared)
is pickled to ``model.pkl``.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import InvalidPayload
from domain.pipeline import IMPORT_PATH, check_param
from service.ml.tabular import (
    Table,
    as_json_value,
    classification_target,
    first_non_numeric,
    parse_numeric,
    read_table,
    regression_target,
    split_rows,
    validation_split,
    write_predictions,
)
from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult
from service.runners.scores import classification_scores, regression_scores

IMPUTE = (None, "mean", "median")
SCALE = (None, "standard", "minmax")
MAX_WARNINGS = 10


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def resolve_estimator(path: Any) -> type:
    """The estimator class at ``path``; refuse anything that is not a scikit-learn estimator class."""
    from sklearn.base import BaseEstimator

    if not isinstance(path, str) or not path.startswith("sklearn.") or not IMPORT_PATH.fullmatch(path):
        raise ExecutionError(f"estimator {path!r} is outside the sklearn. namespace; only scikit-learn classes run")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ExecutionError(f"unknown estimator {path!r}: no module {module_name!r}") from None
    found = getattr(module, class_name, None)
    if found is None:
        raise ExecutionError(f"unknown estimator {path!r}: {module_name} has no {class_name}")
    if not isinstance(found, type) or not issubclass(found, BaseEstimator):
        raise ExecutionError(f"{path!r} is not a scikit-learn estimator class")
    if not (hasattr(found, "fit") and hasattr(found, "predict")):
        raise ExecutionError(f"{path!r} is not a predictor (it has no fit and predict)")
    return found


def _check_type(owner: str, name: str, value: Any, default: Any) -> None:
    if value is None:
        return
    if isinstance(default, bool):
        wrong = not isinstance(value, bool)
    elif isinstance(default, (int, float)):
        wrong = isinstance(value, (bool, str, list, dict))
    elif isinstance(default, str):
        wrong = isinstance(value, (bool, list, dict))
    else:
        wrong = False
    if wrong:
        raise ExecutionError(
            f"parameter {name!r} of {owner} must be like its default {default!r}, got {type(value).__name__} {value!r}"
        )


def estimator_params(request: ExecutionRequest, cls: type) -> dict[str, Any]:
    """Schema defaults, then ``spec.estimator_params``, then run params; checked against the estimator."""
    spec = request.spec
    schema = spec.get("params_schema") or {}
    spec_params = spec.get("estimator_params") or {}
    if not isinstance(spec_params, dict):
        raise ExecutionError("spec.estimator_params must be an object")
    for name, value in request.params.items():
        if name in schema:
            try:
                check_param(name, value, schema[name])
            except InvalidPayload as exc:
                raise ExecutionError(exc.detail) from None
    defaults = {k: r["default"] for k, r in schema.items() if isinstance(r, dict) and "default" in r}
    merged: dict[str, Any] = defaults | spec_params | request.params
    try:
        known = cls().get_params(deep=False)
    except Exception as exc:
        raise ExecutionError(f"{cls.__name__} cannot be built with default parameters: {one_line(exc)}") from None
    for name, value in merged.items():
        if name not in known:
            raise ExecutionError(f"unknown parameter {name!r} for {cls.__name__}")
        _check_type(cls.__name__, name, value, known[name])
    if "random_state" in known and "random_state" not in merged:
        merged["random_state"] = request.seed
    return merged


def _preprocessing(spec: dict[str, Any]) -> tuple[dict[str, Any], bool, list[str]] | None:
    declared = spec.get("preprocessing")
    if declared is None:
        return None
    if not isinstance(declared, dict) or set(declared) - {"numeric", "categorical"}:
        raise ExecutionError("spec.preprocessing must be an object with numeric and/or categorical")
    numeric = declared.get("numeric") or {}
    categorical = declared.get("categorical") or {}
    if not isinstance(numeric, dict) or set(numeric) - {"impute", "scale"}:
        raise ExecutionError("spec.preprocessing.numeric may only say impute and scale")
    if numeric.get("impute") not in IMPUTE:
        raise ExecutionError("spec.preprocessing.numeric.impute must be mean, median or null")
    if numeric.get("scale") not in SCALE:
        raise ExecutionError("spec.preprocessing.numeric.scale must be standard, minmax or null")
    if not isinstance(categorical, dict) or set(categorical) - {"one_hot", "columns"}:
        raise ExecutionError("spec.preprocessing.categorical may only say one_hot and columns")
    if not isinstance(categorical.get("one_hot", False), bool):
        raise ExecutionError("spec.preprocessing.categorical.one_hot must be true or false")
    columns = categorical.get("columns", [])
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ExecutionError("spec.preprocessing.categorical.columns must be a list of feature names")
    return numeric, bool(categorical.get("one_hot", False)), columns


def _features(table: Table, features: list[str], one_hot: bool, declared: list[str]) -> tuple[NDArray[Any], list[str]]:
    """The feature matrix (float, or object when categorical) and the categorical feature names."""
    for name in declared:
        if name not in features:
            raise ExecutionError(f"spec.preprocessing.categorical.columns names {name!r}, which is not a feature")
    numeric: dict[str, NDArray[np.float64]] = {}
    categorical: list[str] = []
    for name in features:
        column = None if name in declared else parse_numeric(table.columns[name])
        if column is None:
            if not one_hot:
                example = first_non_numeric(table.columns[name])
                raise ExecutionError(
                    f"feature {name!r} is not numeric (e.g. {example!r}); "
                    "declare spec.preprocessing.categorical.one_hot to encode it"
                )
            categorical.append(name)
        else:
            numeric[name] = column
    if not categorical:
        return np.column_stack([numeric[name] for name in features]), []
    matrix = np.empty((table.n_rows, len(features)), dtype=object)
    for j, name in enumerate(features):
        matrix[:, j] = numeric[name] if name in numeric else np.array(table.columns[name], dtype=object)
    return matrix, categorical


def _build_model(estimator: Any, features: list[str], categorical: list[str], prep: Any) -> Any:
    if prep is None:
        return estimator
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    numeric, _, _ = prep
    steps: list[tuple[str, Any]] = []
    if numeric.get("impute"):
        steps.append(("impute", SimpleImputer(strategy=numeric["impute"])))
    if numeric.get("scale"):
        steps.append(("scale", StandardScaler() if numeric["scale"] == "standard" else MinMaxScaler()))
    numeric_columns = [j for j, name in enumerate(features) if name not in categorical]
    categorical_columns = [j for j, name in enumerate(features) if name in categorical]
    transformers: list[tuple[str, Any, list[int]]] = []
    if numeric_columns:
        transformers.append(("numeric", Pipeline(steps) if steps else "passthrough", numeric_columns))
    if categorical_columns:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore"), categorical_columns))
    return Pipeline([("preprocess", ColumnTransformer(transformers, sparse_threshold=0)), ("model", estimator)])


def execute_sklearn(request: ExecutionRequest) -> ExecutionResult:
    """Fit the spec's estimator on the first dataset and score it on a seeded validation split."""
    import sklearn
    from sklearn.base import is_classifier, is_regressor

    spec = request.spec
    path = spec.get("estimator")
    cls = resolve_estimator(path)
    params = estimator_params(request, cls)
    task, features, target = spec["task"], list(spec["features"]), spec["target"]
    prep = _preprocessing(spec)
    fraction = validation_split(spec)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ExecutionError(f"{path} rejected its parameters: {one_line(exc)}") from None
    if task == "classification" and not is_classifier(estimator):
        raise ExecutionError(f"{path} is not a classifier, but spec.task is classification")
    if task == "regression" and not is_regressor(estimator):
        raise ExecutionError(f"{path} is not a regressor, but spec.task is regression")

    table = read_table(request.datasets[0], features, target)
    X, categorical = _features(table, features, prep is not None and prep[1], prep[2] if prep else [])
    y = classification_target(table, target) if task == "classification" else regression_target(table, target)
    train, validation = split_rows(y, task, fraction, request.seed)
    model = _build_model(estimator, features, categorical, prep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(X[train], y[train])
        except (ValueError, TypeError) as exc:
            hint = "; declare spec.preprocessing.numeric.impute" if "NaN" in str(exc) and prep is None else ""
            raise ExecutionError(f"{path} could not be fitted: {one_line(exc)}{hint}") from None
        predicted = model.predict(X[validation])
        has_proba = task == "classification" and hasattr(model, "predict_proba")
        proba = model.predict_proba(X[validation]) if has_proba else None
    details: dict[str, Any] = {
        "estimator": path,
        "estimator_params": params,
        "features": features,
        "categorical_features": categorical,
        "n_train": len(train),
        "n_validation": len(validation),
        "sklearn_version": sklearn.__version__,
        "warnings": sorted({" ".join(str(w.message).split()) for w in caught})[:MAX_WARNINGS],
        "metrics_reported_live": 0,
    }
    if task == "classification":
        classes = [as_json_value(c) for c in model.classes_]
        metrics, skipped = classification_scores(y[validation], predicted, proba, classes, step=0)
        if proba is not None and len(classes) == 2:
            values, details["prediction_kind"], details["positive_class"] = list(proba[:, 1]), "probability", classes[1]
        else:
            values, details["prediction_kind"] = list(predicted), "class"
        details["classes"] = classes
    else:
        metrics, skipped = regression_scores(y[validation], predicted, step=0)
        values, details["prediction_kind"] = list(predicted), "value"
    details["skipped_metrics"] = skipped
    model_file = request.output_dir / "model.pkl"
    model_file.write_bytes(pickle.dumps(model, protocol=5))
    predictions = write_predictions(request.output_dir / "predictions.json", list(validation), values)
    return ExecutionResult(metrics, model_file, predictions, details)
