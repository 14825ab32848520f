"""Models trained by the ledger's runners, loaded for serving: feature matrices and predictions.

The sklearn kind stores ``model.pkl``: a pickled estimator, or a
``Pipeline(preprocess=ColumnTransformer(...), model=estimator)`` when the spec
declared preprocessing. The torch kind stores ``model.pt``: a plain dict
(format ``mlledger.mlp.v1``) with the MLP's layer sizes, its ``state_dict``,
the feature standardisation and the classes; it is read with
``torch.load(weights_only=True)`` on the CPU and the network is rebuilt from the
sizes, so loading it never runs pickled code.

Unpickling ``model.pkl`` could run arbitrary code, and runners are untrusted
compute: the file is unpickled by an allowlist of scikit-learn and NumPy types
(:mod:`service.ml.estimator_pickle`) and its trees are checked before use. Only
artifacts of the ledger's own runners reach this module, read from the
content-addressed blob store where every read is checked against the digest
the ledger recorded for the run. Models trained elsewhere are loaded from
safe formats only (:mod:`service.ml.safe_formats`).

A :class:`LoadedModel` is read-only after loading, so ``matrix``, ``scores`` and
``predict`` may be called from several threads at once; torch inference runs
under ``torch.no_grad()`` with the network in eval mode.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import InvalidPayload
from service.ml.unsupported import UnsupportedModel

__all__ = ["LoadedModel", "SklearnModel", "TorchModel", "UnsupportedModel", "load_model"]

CLASSIFICATION, REGRESSION = "classification", "regression"
TORCH_FORMAT = "mlledger.mlp.v1"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
PICKLE_PROTO = 0x80  # pickle protocol 2 and later start with PROTO
_PLAIN_NUMBERS = frozenset({int, float, type(None)})  # None becomes NaN in a float array


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON can carry."""
    return value.item() if isinstance(value, np.generic) else value


class LoadedModel:
    """A trained model ready to score rows of named features.

    ``features`` is the column order of every matrix; ``categorical`` names the
    features that are one-hot encoded (their values are strings). For
    classification ``classes`` lists the labels in the model's output order and,
    with two classes, ``positive_class`` is the one whose probability is served.
    """

    kind: str

    def __init__(
        self,
        *,
        task: str,
        features: list[str],
        categorical: list[str],
        classes: list[Any] | None,
        positive_class: Any,
    ) -> None:
        self.task = task
        self.features = list(features)
        self.categorical = list(categorical)
        self.classes = None if classes is None else list(classes)
        self.positive_class = positive_class
        self._is_categorical = [name in set(categorical) for name in features]
        # a row's values in feature order, in C (a tuple from two features on)
        self._pick = operator.itemgetter(*self.features) if len(self.features) > 1 else None

    @property
    def positive_index(self) -> int | None:
        """Column of the positive class in ``scores`` (binary classification), else None."""
        if self.classes is None or len(self.classes) != 2:
            return None
        return self.classes.index(self.positive_class)

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[Any]:
        """The rows as a matrix in feature order.

        Numeric features become floats (null becomes NaN); categorical features
        stay strings (null becomes the empty string, as a blank CSV cell did in
        training). The matrix is float, or object when there are categorical features.
        """
        if not self.categorical:
            fast = self._numeric_matrix(rows)
            if fast is not None:
                return fast
        dtype: Any = object if self.categorical else np.float64
        out = np.empty((len(rows), len(self.features)), dtype=dtype)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidPayload(f"row {i} must be an object of feature values", field=f"rows.{i}")
            for j, (name, categorical) in enumerate(zip(self.features, self._is_categorical, strict=True)):
                if name not in row:
                    raise InvalidPayload(f"row {i} is missing the feature {name!r}", field=f"rows.{i}.{name}")
                out[i, j] = _categorical(row[name], i, name) if categorical else _numeric(row[name], i, name)
        return out

    def _numeric_matrix(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.float64] | None:
        """The common case in one pass: every value an int, a float or null. None: take the checking path."""
        try:
            if self._pick is not None:
                values: list[Any] = list(map(self._pick, rows))
            else:
                values = [[row[name] for name in self.features] for row in rows]
        except (KeyError, TypeError):
            return None
        if not set(map(type, itertools.chain.from_iterable(values))) <= _PLAIN_NUMBERS:
            return None
        return np.array(values, dtype=np.float64).reshape(len(rows), len(self.features))

    def scores(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Class probabilities ``(n, len(classes))``, or values ``(n,)`` for regression."""
        raise NotImplementedError

    def labels(self, X: NDArray[Any]) -> list[Any]:
        """The predicted class of each row (classification only)."""
        if self.classes is None:
            raise InvalidPayload("a regression model predicts values, not labels")
        return [self.classes[k] for k in np.argmax(self.scores(X), axis=1)]

    def predict(self, X: NDArray[Any]) -> list[dict[str, Any]]:
        """One JSON-ready output per row.

        Classification: ``{"label": c, "probability": p}`` with ``p`` the positive
        class's probability (two classes), or ``{"label": c, "probabilities":
        {str(class): p}}`` (more). Regression: ``{"value": v}``.
        """
        if self.classes is None:
            return [{"value": float(v)} for v in self.scores(X)]
        proba = self.scores(X)
        labels = [self.classes[k] for k in np.argmax(proba, axis=1)]
        positive = self.positive_index
        if positive is not None:
            positives = proba[:, positive]
            return [{"label": label, "probability": float(p)} for label, p in zip(labels, positives, strict=True)]
        names = [str(c) for c in self.classes]
        return [
            {"label": label, "probabilities": {name: float(p) for name, p in zip(names, row, strict=True)}}
            for label, row in zip(labels, proba, strict=True)
        ]


def _numeric(value: Any, row: int, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidPayload(f"feature {name!r} of row {row} must be a number", field=f"rows.{row}.{name}")
    return float(value)


def _categorical(value: Any, row: int, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPayload(f"feature {name!r} of row {row} must be a string", field=f"rows.{row}.{name}")
    return str(value)


class SklearnModel(LoadedModel):
    """A scikit-learn estimator, or a Pipeline of ``preprocess`` then ``model``.

    ``estimator`` is the final estimator and ``preprocess`` the transformer in
    front of it (None without preprocessing), so explanations can look inside.
    """

    kind = "sklearn"

    def __init__(self, model: Any, **fields: Any) -> None:
        super().__init__(**fields)
        from sklearn.pipeline import Pipeline

        self.model = model
        if isinstance(model, Pipeline):
            self.preprocess: Any = model[:-1] if len(model) > 1 else None
            self.estimator: Any = model[-1]
        else:
            self.preprocess, self.estimator = None, model

    def _call(self, method: str, X: NDArray[Any]) -> NDArray[Any]:
        try:
            out: NDArray[Any] = getattr(self.model, method)(X)
        except (ValueError, TypeError) as exc:
            raise InvalidPayload(f"the model cannot score these rows: {' '.join(str(exc).split())}") from None
        return out

    def scores(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Class probabilities ``(n, len(classes))``, or values ``(n,)`` for regression."""
        if self.classes is None:
            return np.asarray(self._call("predict", X), dtype=np.float64).reshape(len(X))
        if not hasattr(self.model, "predict_proba"):
            raise InvalidPayload(f"{type(self.estimator).__name__} gives no class probabilities")
        return np.asarray(self._call("predict_proba", X), dtype=np.float64)

    def labels(self, X: NDArray[Any]) -> list[Any]:
        """The predicted class of each row, from the estimator's own ``predict``."""
        if self.classes is None:
            raise InvalidPayload("a regression model predicts values, not labels")
        return [_plain(label) for label in self._call("predict", X)]

    def predict(self, X: NDArray[Any]) -> list[dict[str, Any]]:
        """One JSON-ready output per row (see :meth:`LoadedModel.predict`).

        A classifier without ``predict_proba`` (e.g. LinearSVC) gives ``{"label": c}`` only.
        """
        if self.classes is not None and not hasattr(self.model, "predict_proba"):
            return [{"label": label} for label in self.labels(X)]
        return super().predict(X)


class TorchModel(LoadedModel):
    """The torch kind's MLP on the CPU, with the standardisation it was trained with."""

    kind = "torch"

    def __init__(self, saved: Mapping[str, Any], **fields: Any) -> None:
        super().__init__(**fields)
        import torch

        sizes = [int(s) for s in saved["layer_sizes"]]
        self.layer_sizes = sizes
        self.network = _mlp(sizes)
        try:
            self.network.load_state_dict(saved["state_dict"], strict=True)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise UnsupportedModel(f"the saved weights do not fit layer sizes {sizes}: {exc}") from None
        self.network.eval()
        self.feature_mean = _vector(saved["feature_mean"], len(self.features), "feature_mean")
        self.feature_std = _vector(saved["feature_std"], len(self.features), "feature_std")
        self.target_mean = float(saved.get("target_mean", 0.0))
        self.target_std = float(saved.get("target_std", 1.0))
        self._torch = torch

    def scores(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Softmax probabilities ``(n, len(classes))``, or values ``(n,)`` in target units."""
        torch = self._torch
        raw = np.asarray(X, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.features):
            raise InvalidPayload(f"expected a matrix of {len(self.features)} features, got shape {raw.shape}")
        if np.isnan(raw).any():
            row, column = np.argwhere(np.isnan(raw))[0]
            name = self.features[column]
            raise InvalidPayload(
                f"feature {name!r} of row {row} is missing; the torch model needs every feature",
                field=f"rows.{row}.{name}",
            )
        standardized = torch.tensor((raw - self.feature_mean) / self.feature_std, dtype=torch.float32)
        with torch.no_grad():
            out = self.network(standardized)
            if self.classes is not None:
                return np.asarray(torch.softmax(out, dim=1).double().numpy())
        return np.asarray(out.squeeze(-1).double().numpy()) * self.target_std + self.target_mean


def _mlp(sizes: list[int]) -> Any:
    """The torch kind's network layout: Linear layers with ReLU between them (strict loading checks it)."""
    from service.ml.network import mlp

    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise UnsupportedModel(f"layer sizes {sizes} do not describe a network")
    return mlp(sizes)


def _vector(value: Any, length: int, name: str) -> NDArray[np.float64]:
    vector = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64).reshape(-1)
    if vector.shape != (length,):
        raise UnsupportedModel(f"{name} has {vector.size} values for {length} features")
    return vector


def load_model(path: Path, details: Mapping[str, Any]) -> LoadedModel:
    """Load the model file of a run, described by the run's execution ``details``.

    ``details`` is what the runner recorded: ``features``, ``categorical_features``,
    ``classes``, ``positive_class``, ``kind`` and, when known, ``task``. The format
    is told by the file's first bytes (a torch zip archive or a pickle), not its
    name, since blobs are stored under their digest.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise UnsupportedModel(f"cannot read model file {path.name}: {exc.strerror}") from None
    kind = details.get("kind")
    if head == ZIP_MAGIC:
        found = "torch"
    elif head[:1] == bytes([PICKLE_PROTO]):
        found = "sklearn"
    else:
        raise UnsupportedModel(
            f"unknown model format: {path.name} is neither a pickled scikit-learn model nor a torch model file"
        )
    if kind is not None and kind != found:
        raise UnsupportedModel(f"the run is of the {kind} kind, but {path.name} is a {found} model file")
    return _load_torch(path, details) if found == "torch" else _load_sklearn(path, details)


def described_features(details: Mapping[str, Any], fallback: Any = None) -> list[str]:
    """The features ``details`` lists (a non-empty list of names), equal to ``fallback`` when one is given."""
    features = details.get("features", fallback)
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise UnsupportedModel("the run's details must list its features (a non-empty list of names)")
    if fallback is not None and list(fallback) != features:
        raise UnsupportedModel(f"the run's details name features {features}, the model file {list(fallback)}")
    return list(features)


def _task(details: Mapping[str, Any], found: str) -> str:
    task = details.get("task", found)
    if task != found:
        raise UnsupportedModel(f"the run's details say task {task!r}, but the model is a {found} model")
    return found


def described_classes(details: Mapping[str, Any], found: list[Any]) -> tuple[list[Any], Any]:
    """The classes (``found`` in the model, as ``details`` lists them) and the positive class of a binary one."""
    recorded = details.get("classes", found)
    if list(recorded) != found:
        raise UnsupportedModel(f"the run's details list classes {recorded}, but the model has {found}")
    if len(found) < 2:
        raise UnsupportedModel(f"a classifier needs two or more classes, the model has {found}")
    positive = details.get("positive_class", found[1]) if len(found) == 2 else None
    if len(found) == 2 and positive not in found:
        raise UnsupportedModel(f"positive class {positive!r} is not one of the classes {found}")
    return found, positive


def _load_sklearn(path: Path, details: Mapping[str, Any]) -> SklearnModel:
    from service.ml.estimator_pickle import load_estimator_pickle

    # Runner-produced blobs only, read digest-checked, and unpickled by an allowlist (see the module docstring).
    return sklearn_model(load_estimator_pickle(path.read_bytes(), path.name), details, path.name)


def sklearn_model(model: Any, details: Mapping[str, Any], name: str) -> SklearnModel:
    """A loaded scikit-learn estimator checked against the run's ``details`` (features, task, classes)."""
    from sklearn.base import BaseEstimator, is_classifier, is_regressor

    if not isinstance(model, BaseEstimator) or not hasattr(model, "predict"):
        raise UnsupportedModel(f"{name} holds a {type(model).__name__}, not a scikit-learn predictor")
    features = described_features(details)
    width = getattr(model, "n_features_in_", len(features))
    if width != len(features):
        raise UnsupportedModel(f"the model takes {width} features, the run's details name {len(features)}")
    categorical = list(details.get("categorical_features") or [])
    if set(categorical) - set(features):
        raise UnsupportedModel("the run's categorical features must be among its features")
    if is_classifier(model):
        classes, positive = described_classes(details, [_plain(c) for c in model.classes_])
        task = _task(details, CLASSIFICATION)
    elif is_regressor(model):
        classes, positive, task = None, None, _task(details, REGRESSION)
    else:
        raise UnsupportedModel(f"{type(model).__name__} is neither a classifier nor a regressor")
    return SklearnModel(
        model, task=task, features=features, categorical=categorical, classes=classes, positive_class=positive
    )


def _load_torch(path: Path, details: Mapping[str, Any]) -> TorchModel:
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsupportedModel(f"{path.name} is not a torch model file of plain weights: {exc}") from None
    if not isinstance(saved, dict) or saved.get("format") != TORCH_FORMAT:
        raise UnsupportedModel(f"{path.name} is not an {TORCH_FORMAT} model")
    return torch_model(saved, details, path.name)


def torch_model(saved: Mapping[str, Any], details: Mapping[str, Any], name: str) -> TorchModel:
    """The MLP of ``saved`` (layer sizes, ``state_dict``, standardisation) checked against ``details``."""
    missing = sorted({"task", "features", "layer_sizes", "state_dict", "feature_mean", "feature_std"} - set(saved))
    if missing:
        raise UnsupportedModel(f"{name} lacks {', '.join(missing)}")
    features = described_features(details, saved["features"])
    task = _task(details, str(saved["task"]))
    classes: list[Any] | None = None
    positive = None
    if task == CLASSIFICATION:
        classes, positive = described_classes(details, list(saved.get("classes") or []))
    sizes = saved["layer_sizes"]
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(type(s) is int for s in sizes):
        raise UnsupportedModel(f"layer sizes {sizes!r} do not describe a network")
    if int(sizes[0]) != len(features):
        raise UnsupportedModel(f"the network takes {sizes[0]} inputs for {len(features)} features")
    outputs = len(classes) if classes is not None else 1
    if int(sizes[-1]) != outputs:
        raise UnsupportedModel(f"the network has {sizes[-1]} outputs where {outputs} are needed")
    return TorchModel(saved, task=task, features=features, categorical=[], classes=classes, positive_class=positive)
