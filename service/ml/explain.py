"""SHAP explanations of served models: reason codes per prediction, a global report per model version.

:func:`explainer_for` picks the explainer for a :class:`~service.ml.model_loading.LoadedModel`:

- ``tree``: ``shap.TreeExplainer`` (path-dependent TreeSHAP, exact and fast) for
  scikit-learn decision trees, random forests, extra trees, gradient boosting and
  histogram gradient boosting. It uses the training distribution the trees carry
  (their node cover), not a background sample, so its background size is 0.
  For ensembles of shallow trees shap's values are computed once per decision
  region of each tree and looked up per row (:mod:`service.ml.tree_regions`).
- ``linear``: ``shap.LinearExplainer`` (interventional, exact) for linear models
  (LogisticRegression, LinearRegression, Ridge, Lasso, SGD, LinearSVC, ...),
  against a seeded background sample of at most 100 rows.
- ``permutation``: ``shap.PermutationExplainer`` for anything else, the torch
  kind's MLP included, against a seeded background sample of at most 50 rows. Its
  values are estimates, but each one is exactly additive: a permutation's
  marginal contributions telescope from the background mean to the model output.

Tree and linear explainers are checked on background rows when they are built:
if base value plus contributions does not give the model's output within 1e-6
the permutation explainer is used instead, so additivity always holds.

With a preprocessing Pipeline the final estimator is explained on the
transformed matrix and the contributions of transformed columns are summed back
onto the feature they came from (every one-hot column onto its categorical
feature, a scaled column onto itself); sums are unchanged, so additivity holds
per original feature.

What is explained (``output_space``, the quantity base value plus contributions
equals): ``log_odds`` (binary classifiers whose probability is the sigmoid of
their decision function), ``logit`` (multiclass ones, softmax of the decision
function), ``margin`` (another decision function), ``probability``
(``predict_proba``: forests, single trees, the torch MLP, other classifiers) or
``value`` (regression). With two classes the positive class is explained; with
more, each row's predicted class (the arg-max of its outputs) is explained and
named in :attr:`Explanation.output_class`.

Explaining is safe from several threads; the permutation explainer seeds
NumPy's global random state, so its calls are serialised by a lock and the
state is restored.

The tracing of preprocessing columns back to features lives in
:mod:`service.ml.explain_columns` (re-exported here); the global report built
from an explainer (its plots and HTML page) in :mod:`service.ml.explain_report`,
which imports this module, never the other way.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from service.ml.explain_columns import column_groups
from service.ml.model_loading import LoadedModel, SklearnModel, UnsupportedModel
from service.ml.tree_regions import region_table

__all__ = [
    "Explanation",
    "ModelExplainer",
    "background_digest",
    "column_groups",
    "explainer_for",
    "reason_codes",
    "top_reason_codes",
]

TOP_K = 4
LINEAR_BACKGROUND = 100
PERMUTATION_BACKGROUND = 50
PERMUTATIONS = 2
ADDITIVITY_TOLERANCE = 1e-6
SELF_CHECK_ROWS = 20
_NUMPY_RANDOM = threading.Lock()  # shap's permutation explainer uses NumPy's global random state

Matrix = NDArray[Any]
Attribution = tuple[NDArray[np.float64], NDArray[np.float64]]
Arrays = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], list[Any]]


@dataclass(frozen=True)
class Explanation:
    """One row's explanation: ``base_value + sum(contributions) == output`` in the explainer's output space.

    ``contributions`` follow the model's feature order; ``output_class`` is the
    class whose output is explained (None for regression).
    """

    base_value: float
    contributions: list[float]
    output: float
    output_class: Any = None

    def to_json(self) -> dict[str, Any]:
        """Base value, output and explained class, for the prediction event (reason codes carry the rest)."""
        return {"base_value": self.base_value, "output": self.output, "output_class": self.output_class}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reason_codes(
    explanation: Explanation,
    row_values: Sequence[Any] | Mapping[str, Any],
    features: Sequence[str],
    top_k: int = TOP_K,
) -> list[dict[str, Any]]:
    """The ``top_k`` features with the largest absolute contribution, largest first (ties by feature name).

    Each is ``{"feature", "value", "contribution"}`` with plain JSON values (a
    missing numeric value is null). ``row_values`` is the row in feature order,
    or a mapping from feature name to value.
    """
    contributions = explanation.contributions
    if len(contributions) != len(features):
        raise InvalidPayload(f"{len(contributions)} contributions for {len(features)} features")
    row = row_values if isinstance(row_values, Mapping) else dict(zip(features, row_values, strict=False))
    return top_reason_codes(np.asarray([contributions], dtype=np.float64), [row], features, top_k=top_k)[0]


def top_reason_codes(
    contributions: NDArray[np.float64],
    rows: Sequence[Mapping[str, Any]],
    features: Sequence[str],
    top_k: int = TOP_K,
) -> list[list[dict[str, Any]]]:
    """The reason codes (as :func:`reason_codes` describes them) of many rows, ranked by NumPy in one pass.

    ``contributions`` is ``(rows, features)`` in the model's feature order, as
    :meth:`ModelExplainer.explain_arrays` gives it; ``rows`` map feature names
    to the input values.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidPayload(f"top_k must be a non-negative integer, got {top_k!r}", field="top_k")
    contributions = np.asarray(contributions, dtype=np.float64)
    if contributions.ndim != 2 or contributions.shape != (len(rows), len(features)):
        raise InvalidPayload(
            f"contributions of shape {contributions.shape} for {len(rows)} rows of {len(features)} features"
        )
    k = min(top_k, len(features))
    if k == 0 or not rows:
        return [[] for _ in rows]
    by_name = {name: rank for rank, name in enumerate(sorted(features))}
    names = np.broadcast_to(np.array([by_name[name] for name in features]), contributions.shape)
    order = np.lexsort((names, -np.abs(contributions)), axis=-1)[:, :k]  # largest |contribution| first, then name
    top = np.take_along_axis(contributions, order, axis=-1).tolist()
    return [
        [
            {"feature": features[j], "value": _json_value(row.get(features[j])), "contribution": contribution}
            for j, contribution in zip(picked, values, strict=True)
        ]
        for picked, values, row in zip(order.tolist(), top, rows, strict=True)
    ]


class ModelExplainer:
    """Explains a loaded model's outputs per original feature; built by :func:`explainer_for`.

    ``name`` is ``tree``, ``linear`` or ``permutation``; ``output_space`` what
    base value plus contributions equals; ``background_digest`` the
    ``sha256:`` of the canonical JSON of the background rows used
    (``{"features": [...], "rows": [[...], ...]}``, original values, NaN as null).
    """

    def __init__(
        self,
        *,
        model: LoadedModel,
        name: str,
        output_space: str,
        background: Matrix,
        transform: Callable[[Matrix], NDArray[np.float64]],
        outputs: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        attribute: Callable[[NDArray[np.float64]], Attribution],
        groups: NDArray[np.float64],
    ) -> None:
        self.name = name
        self.output_space = output_space
        self.features = list(model.features)
        self.categorical = list(model.categorical)
        self.background_size = len(background)
        self.background_digest = background_digest(self.features, background)
        self._classes = model.classes
        self._positive = model.positive_class
        self._positive_index = model.positive_index
        self._transform = transform
        self._outputs = outputs
        self._attribute = attribute
        self._groups = groups

    def describe(self) -> dict[str, Any]:
        """The explainer's identity, as recorded with explanations and reports."""
        return {
            "explainer": self.name,
            "output_space": self.output_space,
            "background_digest": self.background_digest,
            "background_size": self.background_size,
        }

    def explain(self, X: Matrix) -> list[Explanation]:
        """Explain each row of ``X`` (a matrix from :meth:`LoadedModel.matrix`)."""
        contributions, base, output, explained = self.explain_arrays(X)
        return [
            Explanation(float(b), row, float(o), c)
            for row, b, o, c in zip(contributions.tolist(), base, output, explained, strict=True)
        ]

    def explain_arrays(self, X: Matrix) -> Arrays:
        """Contributions ``(n, features)``, base values ``(n,)``, outputs ``(n,)`` and explained classes."""
        transformed = self._transformed(X)
        if transformed is None:
            empty = np.empty(0)
            return np.empty((0, len(self.features))), empty, empty, []
        out = np.asarray(self._outputs(transformed), dtype=np.float64)
        contributions, base, selected, explained = self._selected(*self._attribute(transformed), out)
        assert selected is not None
        if not np.isfinite(selected).all():
            raise InvalidPayload("the model's output or its explanation is not a finite number for these rows")
        return contributions, base, selected, explained

    def attributions(self, X: Matrix) -> Attribution:
        """The contributions and base values of :meth:`explain_arrays`, for serving.

        The rows are scored only where the explained class must be chosen
        among several outputs: a binary classifier or a regressor is explained
        without running the model once more.
        """
        transformed = self._transformed(X)
        if transformed is None:
            return np.empty((0, len(self.features))), np.empty(0)
        values, base = self._attribute(transformed)
        out = None if np.ndim(values) == 2 else np.asarray(self._outputs(transformed), dtype=np.float64)
        contributions, base, _, _ = self._selected(values, base, out)
        return contributions, base

    def _transformed(self, X: Matrix) -> NDArray[np.float64] | None:
        """``X`` checked and preprocessed, or None when it has no rows."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise InvalidPayload(f"expected a matrix of {len(self.features)} features, got shape {X.shape}")
        return self._transform(X) if len(X) else None

    def _selected(
        self, values: NDArray[np.float64], base: NDArray[np.float64], out: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None, list[Any]]:
        """Per row: the explained output's contributions per feature, base value, output and class.

        One output per row needs no ``out`` (it is then None in the answer); several need it to choose.
        """
        values, base = np.asarray(values), np.asarray(base)
        n = len(values)
        if values.ndim == 2:
            if out is not None and out.ndim != 1:
                raise UnsupportedModel(f"{self.name} explainer gave values of shape {values.shape} for {out.shape}")
            if self._classes is None:
                sign, explained = 1.0, [None] * n
            else:
                # A binary decision function scores classes[1]; flip it when the positive class is classes[0].
                sign = 1.0 if self._positive == self._classes[1] else -1.0
                explained = [self._positive] * n
            selected = None if out is None else sign * out
            values, base = sign * values, sign * base
        else:
            if out is None or out.ndim != 2 or values.ndim != 3 or self._classes is None:
                shape = "one output" if out is None or out.ndim == 1 else str(out.shape)
                raise UnsupportedModel(f"{self.name} explainer gave values of shape {values.shape} for {shape}")
            rows = np.arange(n)
            columns = np.full(n, self._positive_index) if self._positive_index is not None else np.argmax(out, axis=1)
            explained = [self._classes[k] for k in columns]
            values, base, selected = values[rows, :, columns], base[rows, columns], out[rows, columns]
        contributions = values @ self._groups
        if not (np.isfinite(contributions).all() and np.isfinite(base).all()):
            raise InvalidPayload("the model's output or its explanation is not a finite number for these rows")
        return contributions, base, selected, explained


def background_digest(features: Sequence[str], rows: Matrix) -> str:
    """``sha256:`` of the canonical JSON of background rows in original feature values."""
    document = {"features": list(features), "rows": [[_json_value(v) for v in row] for row in np.asarray(rows)]}
    return "sha256:" + hashlib.sha256(canonical_json(document, path="background")).hexdigest()


def _sample(X: Matrix, size: int, seed: int) -> Matrix:
    if len(X) <= size:
        return X
    picked = np.sort(np.random.default_rng(seed).choice(len(X), size=size, replace=False))
    return X[picked]


def explainer_for(
    model: LoadedModel, background: Matrix, *, seed: int = 0, permutations: int = PERMUTATIONS
) -> ModelExplainer:
    """The explainer for ``model``; ``background`` is a matrix of representative rows (e.g. training data).

    The background is sampled (seeded) down to what the explainer uses.
    ``permutations`` sets how many antithetic permutations the permutation
    explainer averages per row (more: smoother estimates, proportionally slower).
    """
    background = np.asarray(background)
    if background.ndim != 2 or background.shape[1] != len(model.features) or len(background) == 0:
        raise InvalidPayload(
            f"the background must be a non-empty matrix of {len(model.features)} features, got {background.shape}",
            field="background",
        )
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise InvalidPayload(f"permutations must be a positive integer, got {permutations!r}", field="permutations")
    if isinstance(model, SklearnModel):
        return _sklearn_explainer(model, background, seed, permutations)
    identity = np.eye(len(model.features))
    sample = _sample(background, PERMUTATION_BACKGROUND, seed)
    return _permutation(model, sample, _as_float, model.scores, _scores_space(model), identity, seed, permutations)


def _as_float(X: Matrix) -> NDArray[np.float64]:
    return np.asarray(X, dtype=np.float64)


def _scores_space(model: LoadedModel) -> str:
    return "value" if model.classes is None else "probability"


def _sklearn_transform(model: SklearnModel) -> Callable[[Matrix], NDArray[np.float64]]:
    preprocess = model.preprocess

    def transform(X: Matrix) -> NDArray[np.float64]:
        if preprocess is None:
            return np.asarray(X, dtype=np.float64)
        try:
            out = preprocess.transform(X)
        except (ValueError, TypeError) as exc:
            raise InvalidPayload(f"the model cannot preprocess these rows: {' '.join(str(exc).split())}") from None
        return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)

    return transform


def _estimator_method(model: SklearnModel, name: str) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    method = getattr(model.estimator, name)

    def call(Xt: NDArray[np.float64]) -> NDArray[np.float64]:
        try:
            return np.asarray(method(Xt), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InvalidPayload(f"the model cannot score these rows: {' '.join(str(exc).split())}") from None

    return call


def _sklearn_explainer(model: SklearnModel, background: Matrix, seed: int, permutations: int) -> ModelExplainer:
    transform = _sklearn_transform(model)
    groups = column_groups(model, transform(background[:1]).shape[1])
    estimator = model.estimator
    check_rows = _sample(background, SELF_CHECK_ROWS, seed)
    explainer: ModelExplainer | None = None
    try:
        if _is_tree(estimator):
            explainer = _tree(model, transform, groups, check_rows)
        elif _is_linear(estimator):
            explainer = _linear(model, _sample(background, LINEAR_BACKGROUND, seed), transform, groups)
    except (InvalidPayload, UnsupportedModel):
        raise
    except Exception:  # shap cannot take this model (e.g. native categorical splits): permutation below
        explainer = None
    if explainer is not None and _additive(explainer, check_rows):
        return explainer
    sample = _sample(background, PERMUTATION_BACKGROUND, seed)
    if model.classes is None:
        scores, space = _estimator_method(model, "predict"), "value"
    elif hasattr(estimator, "predict_proba"):
        scores, space = _estimator_method(model, "predict_proba"), "probability"
    else:
        scores, space = _estimator_method(model, "decision_function"), "margin"
    return _permutation(model, sample, transform, scores, space, groups, seed, permutations)


def _additive(explainer: ModelExplainer, rows: Matrix) -> bool:
    """Whether base value plus contributions gives the model output on ``rows`` (within 1e-6)."""
    contributions, base, out, _ = explainer.explain_arrays(rows)
    error = np.abs(base + contributions.sum(axis=1) - out)
    return bool(np.all(error <= ADDITIVITY_TOLERANCE * np.maximum(1.0, np.abs(out))))


def _is_tree(estimator: Any) -> bool:
    from sklearn import ensemble, tree

    return isinstance(
        estimator,
        (
            tree.DecisionTreeClassifier,
            tree.DecisionTreeRegressor,
            tree.ExtraTreeClassifier,
            tree.ExtraTreeRegressor,
            ensemble.RandomForestClassifier,
            ensemble.RandomForestRegressor,
            ensemble.ExtraTreesClassifier,
            ensemble.ExtraTreesRegressor,
            ensemble.GradientBoostingClassifier,
            ensemble.GradientBoostingRegressor,
            ensemble.HistGradientBoostingClassifier,
            ensemble.HistGradientBoostingRegressor,
        ),
    )


def _is_linear(estimator: Any) -> bool:
    # Candidates only: the additivity check at build time refuses e.g. a GLM with a log link.
    module = type(estimator).__module__
    named = module.startswith("sklearn.linear_model") or type(estimator).__name__ in ("LinearSVC", "LinearSVR")
    return named and hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")


def _decision_space(estimator: Any, Xt: NDArray[np.float64]) -> str:
    """``log_odds``/``logit`` when the classifier's probabilities are the sigmoid/softmax of its decision function."""
    if not hasattr(estimator, "predict_proba"):
        return "margin"
    decision = np.asarray(estimator.decision_function(Xt), dtype=np.float64)
    proba = np.asarray(estimator.predict_proba(Xt), dtype=np.float64)
    if decision.ndim == 1:
        expected = 1.0 / (1.0 + np.exp(-decision))
        return "log_odds" if np.allclose(proba[:, 1], expected, atol=1e-6) else "margin"
    shifted = np.exp(decision - decision.max(axis=1, keepdims=True))
    expected = shifted / shifted.sum(axis=1, keepdims=True)
    return "logit" if np.allclose(proba, expected, atol=1e-6) else "margin"


def _per_row(values: Any, expected: Any, n: int) -> Attribution:
    """shap values as an array ((n, t) or (n, t, k)) and the base value repeated per row."""
    values = np.asarray(values, dtype=np.float64)
    base = np.asarray(expected, dtype=np.float64).reshape(-1)
    if values.ndim == 2:
        return values, np.full(n, base[0])
    return values, np.tile(base, (n, 1))


def _tree(
    model: SklearnModel,
    transform: Callable[[Matrix], NDArray[np.float64]],
    groups: NDArray[np.float64],
    probe: Matrix,
) -> ModelExplainer:
    import shap

    estimator = model.estimator
    explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent", model_output="raw")
    expected = explainer.expected_value
    if model.classes is not None and hasattr(estimator, "decision_function"):
        outputs = _estimator_method(model, "decision_function")
        space = _decision_space(estimator, transform(probe))
    elif model.classes is not None:
        outputs, space = _estimator_method(model, "predict_proba"), "probability"
    else:
        outputs, space = _estimator_method(model, "predict"), "value"

    regions = region_table(explainer.model.trees, explainer.model.input_dtype, transform(probe[:1]).shape[1])

    def attribute(Xt: NDArray[np.float64]) -> Attribution:
        if regions is not None and not np.isnan(Xt).any():
            return _per_row(regions.shap_values(Xt), expected, len(Xt))
        return _per_row(explainer.shap_values(Xt, check_additivity=False), expected, len(Xt))

    return ModelExplainer(
        model=model,
        name="tree",
        output_space=space,
        background=probe[:0],
        transform=transform,
        outputs=outputs,
        attribute=attribute,
        groups=groups,
    )


def _linear(
    model: SklearnModel,
    background: Matrix,
    transform: Callable[[Matrix], NDArray[np.float64]],
    groups: NDArray[np.float64],
) -> ModelExplainer:
    import shap

    estimator = model.estimator
    background_t = transform(background)
    explainer = shap.LinearExplainer(estimator, shap.maskers.Independent(background_t, max_samples=len(background_t)))
    expected = explainer.expected_value
    if model.classes is None:
        outputs, space = _estimator_method(model, "predict"), "value"
    else:
        outputs, space = _estimator_method(model, "decision_function"), _decision_space(estimator, background_t)

    def attribute(Xt: NDArray[np.float64]) -> Attribution:
        return _per_row(explainer.shap_values(Xt), expected, len(Xt))

    return ModelExplainer(
        model=model,
        name="linear",
        output_space=space,
        background=background,
        transform=transform,
        outputs=outputs,
        attribute=attribute,
        groups=groups,
    )


def _permutation(
    model: LoadedModel,
    background: Matrix,
    transform: Callable[[Matrix], NDArray[np.float64]],
    outputs: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    space: str,
    groups: NDArray[np.float64],
    seed: int,
    permutations: int,
) -> ModelExplainer:
    import shap

    background_t = transform(background)
    masker = shap.maskers.Independent(background_t, max_samples=len(background_t))
    max_evals = permutations * (2 * background_t.shape[1] + 1)

    def attribute(Xt: NDArray[np.float64]) -> Attribution:
        values, bases = [], []
        with _NUMPY_RANDOM:
            state = np.random.get_state()
            try:
                for row in Xt:
                    # Seeded per row: a row's explanation does not depend on the rest of its batch.
                    explainer = shap.PermutationExplainer(outputs, masker, seed=seed)
                    result = explainer(row[None, :], max_evals=max_evals, silent=True)
                    values.append(result.values[0])
                    bases.append(result.base_values[0])
            finally:
                np.random.set_state(state)
        return np.asarray(values, dtype=np.float64), np.asarray(bases, dtype=np.float64)

    return ModelExplainer(
        model=model,
        name="permutation",
        output_space=space,
        background=background,
        transform=transform,
        outputs=outputs,
        attribute=attribute,
        groups=groups,
    )
