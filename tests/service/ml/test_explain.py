"""SHAP explanations: additivity, reason codes, the choice of explainer, and the global report."""

from __future__ import annotations

import csv
import hashlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from service.ml.explain import (
    Explanation,
    ModelExplainer,
    explainer_for,
    reason_codes,
    top_reason_codes,
)
from service.ml.explain_report import global_report
from service.ml.model_loading import LoadedModel, UnsupportedModel, load_model
from service.runners.executors import ExecutionRequest, execute

FEATURES = [f"f{i}" for i in range(6)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(tmp_path: Path, estimator: Any, features: list[str], **details: Any) -> LoadedModel:
    path = tmp_path / f"{type(estimator).__name__}.pkl"
    path.write_bytes(pickle.dumps(estimator, protocol=5))
    return load_model(path, {"features": features, **details})


def _additivity_error(explanations: list[Explanation]) -> float:
    return max(abs(e.base_value + sum(e.contributions) - e.output) for e in explanations)


@pytest.fixture(scope="module")
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    # shuffle=False: f0..f2 are the informative features, f3..f5 are noise.
    X, y = make_classification(
        n_samples=400, n_features=6, n_informative=3, n_redundant=0, shuffle=False, random_state=0
    )
    return X, y


@pytest.fixture(scope="module")
def gbm(tmp_path_factory: pytest.TempPathFactory, binary_data: tuple[np.ndarray, np.ndarray]) -> LoadedModel:
    X, y = binary_data
    estimator = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0).fit(X, y)
    return _load(tmp_path_factory.mktemp("gbm"), estimator, FEATURES)


@pytest.fixture(scope="module")
def gbm_explainer(gbm: LoadedModel, binary_data: tuple[np.ndarray, np.ndarray]) -> ModelExplainer:
    return explainer_for(gbm, binary_data[0])


@pytest.fixture(scope="module")
def colours() -> tuple[list[dict[str, Any]], np.ndarray]:
    rng = np.random.default_rng(3)
    rows, labels = [], []
    for i in range(240):
        colour = ["red", "green", "blue"][i % 3]
        size = None if i % 13 == 0 else float(rng.normal(10, 2))
        weight = float(rng.normal(0, 1))
        rows.append({"colour": colour, "size": size, "weight": weight})
        labels.append(int((colour == "red") ^ (weight > 0.8)))
    return rows, np.array(labels)


# -- tree and linear: exact additivity ---------------------------------------------------------------


def test_tree_explanations_of_a_gbm_add_up_to_its_log_odds(
    gbm: LoadedModel, gbm_explainer: ModelExplainer, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X = binary_data[0][:100]

    explanations = gbm_explainer.explain(X)

    assert (gbm_explainer.name, gbm_explainer.output_space) == ("tree", "log_odds")
    assert gbm_explainer.background_size == 0
    assert [e.output for e in explanations] == pytest.approx(gbm.estimator.decision_function(X), abs=1e-12)  # type: ignore[attr-defined]
    assert _additivity_error(explanations) < 1e-6
    assert all(len(e.contributions) == 6 and e.output_class == 1 for e in explanations)


def test_tree_explanations_of_a_random_forest_regressor_add_up_to_its_prediction(tmp_path: Path) -> None:
    X, y = make_regression(n_samples=300, n_features=6, random_state=0)
    model = _load(tmp_path, RandomForestRegressor(n_estimators=20, random_state=0).fit(X, y), FEATURES)

    explainer = explainer_for(model, X)
    explanations = explainer.explain(X[:80])

    assert (explainer.name, explainer.output_space) == ("tree", "value")
    assert [e.output for e in explanations] == pytest.approx(model.scores(X[:80]).tolist())
    assert max(abs(e.base_value + sum(e.contributions) - e.output) / max(1, abs(e.output)) for e in explanations) < 1e-6
    assert all(e.output_class is None for e in explanations)


def test_a_binary_random_forest_explains_the_positive_class_probability(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = binary_data
    model = _load(tmp_path, RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y), FEATURES)

    explanations = explainer_for(model, X).explain(X[:50])

    assert [e.output for e in explanations] == pytest.approx(model.scores(X[:50])[:, 1].tolist())
    assert _additivity_error(explanations) < 1e-6


def test_linear_explanations_of_a_pipeline_sum_one_hot_columns_onto_their_feature(
    tmp_path: Path, colours: tuple[list[dict[str, Any]], np.ndarray]
) -> None:
    rows, y = colours
    features = ["colour", "size", "weight"]
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    preprocess = ColumnTransformer(
        [("numeric", numeric, [1, 2]), ("categorical", OneHotEncoder(handle_unknown="ignore"), [0])],
        sparse_threshold=0,
    )
    pipeline = Pipeline([("preprocess", preprocess), ("model", LogisticRegression())])
    matrix = np.array([[r["colour"], np.nan if r["size"] is None else r["size"], r["weight"]] for r in rows], object)
    pipeline.fit(matrix, y)
    model = _load(tmp_path, pipeline, features, categorical_features=["colour"])
    X = model.matrix(rows)

    explainer = explainer_for(model, X, seed=1)
    explanations = explainer.explain(X[:60])

    assert (explainer.name, explainer.output_space, explainer.background_size) == ("linear", "log_odds", 100)
    assert [e.output for e in explanations] == pytest.approx(pipeline.decision_function(X[:60]).tolist(), abs=1e-12)
    assert _additivity_error(explanations) < 1e-6
    # The colour's contribution is the sum over its three one-hot columns of coef * (x - background mean).
    background = X[np.sort(np.random.default_rng(1).choice(len(X), 100, replace=False))]
    transformed, reference = preprocess.transform(X[:60]), preprocess.transform(background).mean(axis=0)
    coef = pipeline[-1].coef_[0]
    expected_colour = ((transformed - reference) * coef)[:, 2:].sum(axis=1)
    assert [e.contributions[0] for e in explanations] == pytest.approx(expected_colour.tolist(), abs=1e-9)


def test_a_multiclass_model_explains_each_rows_predicted_class(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    model = _load(tmp_path, LogisticRegression(max_iter=500).fit(X, y), features)

    explainer = explainer_for(model, X)
    explanations = explainer.explain(X)

    predicted = model.labels(X)
    decision = model.estimator.decision_function(X)  # type: ignore[attr-defined]
    assert (explainer.name, explainer.output_space) == ("linear", "logit")
    assert [e.output_class for e in explanations] == predicted
    assert set(predicted) == {0, 1, 2}
    assert [e.output for e in explanations] == pytest.approx(decision[np.arange(len(X)), predicted].tolist())
    assert _additivity_error(explanations) < 1e-6


def test_attributions_for_serving_equal_the_full_explanation_and_skip_scoring_where_one_output_needs_none(
    tmp_path: Path,
    gbm_explainer: ModelExplainer,
    binary_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, y = binary_data
    iris_X, iris_y = load_iris(return_X_y=True)
    iris = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    forest = _load(tmp_path, RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y), FEATURES)
    multiclass = _load(tmp_path, LogisticRegression(max_iter=500).fit(iris_X, iris_y), iris)
    cases = [(gbm_explainer, X[:40]), (explainer_for(forest, X), X[:40]), (explainer_for(multiclass, iris_X), iris_X)]

    for explainer, rows in cases:
        contributions, base, _, _ = explainer.explain_arrays(rows)
        served_contributions, served_base = explainer.attributions(rows)
        assert np.array_equal(served_contributions, contributions) and np.array_equal(served_base, base)
        empty_contributions, empty_base = explainer.attributions(rows[:0])
        assert empty_contributions.shape == (0, rows.shape[1]) and empty_base.shape == (0,)

    def not_again(_: np.ndarray) -> np.ndarray:
        raise AssertionError("the binary model was scored again to explain it")

    monkeypatch.setattr(gbm_explainer, "_outputs", not_again)
    contributions, base = gbm_explainer.attributions(X[:5])
    assert contributions.shape == (5, len(FEATURES)) and base.shape == (5,)
    with pytest.raises(AssertionError, match="scored again"):
        gbm_explainer.explain_arrays(X[:5])


def test_a_model_shap_has_no_tree_explainer_for_falls_back_to_an_additive_permutation(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    # shap's TreeExplainer takes GradientBoostingClassifier for two classes only.
    model = _load(tmp_path, GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y), features)

    explainer = explainer_for(model, X)
    explanations = explainer.explain(X[::10])

    assert (explainer.name, explainer.output_space, explainer.background_size) == ("permutation", "probability", 50)
    assert [e.output_class for e in explanations] == model.labels(X[::10])
    assert _additivity_error(explanations) < 1e-9


def test_preprocessing_that_mixes_features_cannot_be_explained(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = binary_data
    pipeline = Pipeline([("preprocess", PolynomialFeatures(2)), ("model", LogisticRegression(max_iter=500))]).fit(X, y)
    model = _load(tmp_path, pipeline, FEATURES)

    with pytest.raises(UnsupportedModel, match="PolynomialFeatures changes the number of columns"):
        explainer_for(model, X)


def test_a_background_of_the_wrong_width_is_refused(gbm: LoadedModel) -> None:
    with pytest.raises(InvalidPayload, match="non-empty matrix of 6 features"):
        explainer_for(gbm, np.zeros((10, 4)))


# -- the model-agnostic explainer on the torch kind ----------------------------------------------------


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory: pytest.TempPathFactory, binary_data: tuple[np.ndarray, np.ndarray]) -> LoadedModel:
    X, y = binary_data
    folder = tmp_path_factory.mktemp("torch")
    dataset = folder / "binary.csv"
    with dataset.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "label"])
        writer.writerows([*map(float, x), int(label)] for x, label in zip(X, y, strict=True))
    (folder / "out").mkdir()
    spec = {"features": FEATURES, "target": "label", "task": "classification", "hidden_layers": [8], "epochs": 3}
    result = execute(ExecutionRequest("torch", spec, {}, 7, "cpu", [dataset], None, folder / "out"))
    return load_model(result.model_file, result.details)


def test_a_torch_model_gets_exactly_additive_permutation_explanations(
    torch_model: LoadedModel, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X = binary_data[0]

    explainer = explainer_for(torch_model, X, seed=3)
    explanations = explainer.explain(X[:30])

    assert (explainer.name, explainer.output_space, explainer.background_size) == ("permutation", "probability", 50)
    assert all(len(e.contributions) == 6 and e.output_class == 1 for e in explanations)
    assert [e.output for e in explanations] == pytest.approx(torch_model.scores(X[:30])[:, 1].tolist(), abs=1e-12)
    # Each permutation telescopes from the background mean to the output: additive up to rounding.
    # The network computes in float32, and on some CPUs one row's score differs by an ulp (~3e-8)
    # between batch shapes, so the bar is the 1e-6 rather than float64 rounding.
    assert _additivity_error(explanations) < 1e-6
    assert max(e.base_value for e in explanations) - min(e.base_value for e in explanations) < 1e-12


def test_permutation_explanations_are_seeded_per_row(
    torch_model: LoadedModel, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X = binary_data[0]
    explainer = explainer_for(torch_model, X, seed=3)

    batch = explainer.explain(X[:10])
    alone = explainer.explain(X[7:8])
    again = explainer_for(torch_model, X, seed=3).explain(X[:10])

    assert alone[0] == batch[7]
    assert again == batch


def test_concurrent_explanations_equal_serial_ones(
    torch_model: LoadedModel, gbm_explainer: ModelExplainer, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X = binary_data[0]
    permutation = explainer_for(torch_model, X)
    jobs = [(explainer, X[i * 8 : i * 8 + 8]) for i in range(6) for explainer in (permutation, gbm_explainer)]

    serial = [explainer.explain(rows) for explainer, rows in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda job: job[0].explain(job[1]), jobs))

    assert concurrent == serial


# -- reason codes ------------------------------------------------------------------------------------


def test_reason_codes_are_the_top_k_by_absolute_contribution_ties_by_name() -> None:
    explanation = Explanation(0.1, [0.5, -2.0, 0.0, 2.0, -0.5, 1.0], 1.1)
    row = [1.5, np.float64(2.5), float("nan"), "red", np.int64(4), None]

    codes = reason_codes(explanation, row, ["a", "b", "c", "d", "e", "f"])

    assert codes == [
        {"feature": "b", "value": 2.5, "contribution": -2.0},
        {"feature": "d", "value": "red", "contribution": 2.0},
        {"feature": "f", "value": None, "contribution": 1.0},
        {"feature": "a", "value": 1.5, "contribution": 0.5},
    ]
    assert type(codes[0]["value"]) is float
    assert reason_codes(explanation, row, ["a", "b", "c", "d", "e", "f"], top_k=6)[-2:] == [
        {"feature": "e", "value": 4, "contribution": -0.5},
        {"feature": "c", "value": None, "contribution": 0.0},
    ]


def test_reason_codes_of_a_real_explanation_read_values_from_a_mapping(
    gbm: LoadedModel, gbm_explainer: ModelExplainer, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    row = dict(zip(FEATURES, map(float, binary_data[0][5]), strict=True))
    explanation = gbm_explainer.explain(gbm.matrix([row]))[0]

    codes = reason_codes(explanation, row, FEATURES, top_k=2)

    ranked = sorted(range(6), key=lambda j: -abs(explanation.contributions[j]))[:2]
    assert [c["feature"] for c in codes] == [FEATURES[j] for j in ranked]
    assert [c["value"] for c in codes] == [row[FEATURES[j]] for j in ranked]
    assert [c["contribution"] for c in codes] == [explanation.contributions[j] for j in ranked]
    canonical_json(codes)


TIED_VALUES = [0.0, -0.0, 0.5, -0.5, 1.0, -2.0, 2.0, 3.25]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=8),
    st.lists(st.lists(st.sampled_from(TIED_VALUES), min_size=6, max_size=6), max_size=5),
)
def test_reason_codes_of_many_rows_at_once_equal_those_of_each_row(
    top_k: int, contributions: list[list[float]]
) -> None:
    features = ["b", "a", "f", "c", "e", "d"]  # not in name order, so ties by name are tested
    rows = [
        {name: float(i * 10 + j) if j % 3 else None for j, name in enumerate(features)}
        for i in range(len(contributions))
    ]
    matrix = np.array(contributions, dtype=np.float64).reshape(len(contributions), len(features))

    batch = top_reason_codes(matrix, rows, features, top_k=top_k)

    by_hand = [
        [
            {"feature": features[j], "value": row[features[j]], "contribution": values[j]}
            for j in sorted(range(len(features)), key=lambda j: (-abs(values[j]), features[j]))[:top_k]
        ]
        for values, row in zip(contributions, rows, strict=True)
    ]
    assert batch == by_hand


def test_a_negative_top_k_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="top_k"):
        reason_codes(Explanation(0.0, [1.0], 1.0), [1.0], ["a"], top_k=-1)


# -- the global report -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_inputs(
    gbm_explainer: ModelExplainer, binary_data: tuple[np.ndarray, np.ndarray]
) -> tuple[ModelExplainer, np.ndarray]:
    return gbm_explainer, binary_data[0][:300]


def test_the_global_report_ranks_features_by_mean_absolute_shap(
    report_inputs: tuple[ModelExplainer, np.ndarray],
) -> None:
    explainer, X = report_inputs

    report = global_report(explainer, X, FEATURES)

    contributions, _, _, _ = explainer.explain_arrays(X)
    mean_abs = dict(zip(FEATURES, np.abs(contributions).mean(axis=0), strict=True))
    assert report.mean_abs_shap == sorted(report.mean_abs_shap, reverse=True)
    assert report.mean_abs_shap == pytest.approx([mean_abs[f] for f in report.features])
    assert set(report.features[:3]) == {"f0", "f1", "f2"}  # the informative ones
    assert (report.explainer, report.output_space, report.n_rows) == ("tree", "log_odds", 300)
    assert report.background_digest == explainer.background_digest


def test_the_global_report_plots_are_png_and_its_json_names_them_by_digest(
    report_inputs: tuple[ModelExplainer, np.ndarray],
) -> None:
    explainer, X = report_inputs

    report = global_report(explainer, X, FEATURES, max_display=4)
    document = report.to_json()

    assert report.bar_png.startswith(PNG_SIGNATURE) and report.beeswarm_png.startswith(PNG_SIGNATURE)
    assert document["plots"] == {
        "bar": "sha256:" + hashlib.sha256(report.bar_png).hexdigest(),
        "beeswarm": "sha256:" + hashlib.sha256(report.beeswarm_png).hexdigest(),
    }
    assert [entry["feature"] for entry in document["mean_abs_shap"]] == report.features
    assert b"Software" not in report.bar_png


def test_the_global_report_is_deterministic(report_inputs: tuple[ModelExplainer, np.ndarray]) -> None:
    explainer, X = report_inputs

    first, second = global_report(explainer, X, FEATURES), global_report(explainer, X, FEATURES)

    assert canonical_json(first.to_json()) == canonical_json(second.to_json())
    assert first.plots() == second.plots()


def test_the_global_report_html_is_self_contained_and_escaped(report_inputs: tuple[ModelExplainer, np.ndarray]) -> None:
    explainer, X = report_inputs
    report = global_report(explainer, X, FEATURES)

    page = report.to_html("Credit <model> & v2")

    assert "<title>Credit &lt;model&gt; &amp; v2</title>" in page
    assert all(f"<td>{name}</td>" in page for name in FEATURES)
    assert page.count('src="data:image/png;base64,') == 2
    assert "http" not in page and "url(" not in page and "<script" not in page


def test_the_global_report_colours_categorical_features_and_names_the_background(
    tmp_path: Path, colours: tuple[list[dict[str, Any]], np.ndarray]
) -> None:
    rows, y = colours
    matrix = np.array([[r["colour"], r["weight"]] for r in rows], object)
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("num", "passthrough", [1]), ("cat", OneHotEncoder(), [0])])),
            ("model", RandomForestClassifier(n_estimators=10, random_state=0)),
        ]
    ).fit(matrix, y)
    model = _load(tmp_path, pipeline, ["colour", "weight"], categorical_features=["colour"])
    X = model.matrix([{"colour": r["colour"], "weight": r["weight"]} for r in rows])

    report = global_report(explainer_for(model, X), X, model.features)

    assert report.explainer == "tree" and report.output_space == "probability"
    assert sorted(report.features) == ["colour", "weight"]
    assert report.beeswarm_png.startswith(PNG_SIGNATURE)


def test_the_background_digest_names_the_sample_used(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = binary_data
    model = _load(tmp_path, LogisticRegression().fit(X, y), FEATURES)

    same = explainer_for(model, X, seed=0).background_digest, explainer_for(model, X, seed=0).background_digest
    other = explainer_for(model, X, seed=1).background_digest

    sample = X[np.sort(np.random.default_rng(0).choice(len(X), 100, replace=False))]
    expected = canonical_json({"features": FEATURES, "rows": sample.tolist()})
    assert same[0] == same[1] == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert other != same[0]
