"""Tests of domain.statistics.drift: PSI by hand, reference profiles, and windows that have or have not drifted."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pytest

from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from domain.statistics.drift import OTHER, compare_window, psi, reference_profile

REGIONS = ["north", "south", "east"]


def sample(
    seed: int, n: int, *, income_shift: float = 0.0, region_mix: tuple[float, ...] = (0.5, 0.3, 0.2)
) -> dict[str, Any]:
    """Three normal features and a categorical one; the income shift is in standard deviations."""
    rng = np.random.default_rng(seed)
    return {
        "income": rng.normal(50.0, 10.0, n) + income_shift * 10.0,
        "age": rng.normal(40.0, 12.0, n),
        "score": rng.normal(0.0, 1.0, n),
        "region": [str(r) for r in rng.choice(REGIONS, size=n, p=region_mix)],
    }


@cache
def training_profile() -> dict[str, Any]:
    return reference_profile(sample(0, 5_000))


def test_psi_by_hand() -> None:
    expected, actual = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3) + 0.0
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert psi(expected, expected) == 0.0


def test_psi_floors_empty_cells_at_epsilon() -> None:
    by_hand = (0.5 - 0.6) * math.log(0.5 / 0.6) + 0.0 + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert psi([0.6, 0.4, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(by_hand, rel=1e-12)
    assert psi([0.6, 0.4, 0.0], [0.6, 0.4, 0.0]) == 0.0
    by_hand_coarse = (0.1 - 0.01) * math.log(0.1 / 0.01)
    assert psi([1.0, 0.0], [1.0, 0.1], epsilon=0.01) == pytest.approx(by_hand_coarse, rel=1e-12)


def test_psi_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(InvalidPayload):
        psi([0.5, 0.5], [1.0])


def test_numeric_profile_shape() -> None:
    income = training_profile()["features"]["income"]
    assert income["kind"] == "numeric"
    assert income["n"] == 5_000
    assert income["missing"] == 0.0
    assert len(income["edges"]) == 9
    assert income["edges"] == sorted(income["edges"])
    assert income["fractions"] == [0.1] * 10  # 5,000 distinct values split at their deciles
    assert len(income["quantiles"]) == 101
    assert income["quantiles"][0] == float(np.min(sample(0, 5_000)["income"]))
    assert income["quantiles"][50] == pytest.approx(50.0, abs=0.5)


def test_categorical_profile_shape() -> None:
    region = training_profile()["features"]["region"]
    assert region["kind"] == "categorical"
    assert sorted(region["fractions"]) == [OTHER, "east", "north", "south"]
    assert region["fractions"][OTHER] == 0.0
    assert region["fractions"]["north"] == pytest.approx(0.5, abs=0.02)
    assert sum(region["fractions"].values()) == pytest.approx(1.0)


def test_rare_categories_fold_into_other() -> None:
    profile = reference_profile({"colour": ["red"] * 5 + ["blue"] * 3 + ["green", "pink"]}, max_categories=2)
    assert profile["features"]["colour"]["fractions"] == {"blue": 3 / 10, "red": 5 / 10, OTHER: 2 / 10}


def test_profile_is_deterministic_and_canonical_json() -> None:
    columns = sample(0, 5_000)
    reordered = dict(reversed(list(columns.items())))
    assert canonical_json(reference_profile(columns)) == canonical_json(reference_profile(reordered))
    assert reference_profile(columns) == training_profile()


def test_unshifted_window_has_not_drifted() -> None:
    report = compare_window(training_profile(), sample(1, 1_000))
    assert report["insufficient"] is False
    assert report["n_rows"] == 1_000
    assert report["drifted"] is False
    assert report["drifted_features"] == []
    for name, feature in report["features"].items():
        assert feature["psi"] < 0.1, name
        assert feature["p_value"] > 0.01, name
    assert report["features"]["income"]["test"] == "ks"
    assert report["features"]["region"]["test"] == "chi2"
    assert report["thresholds"] == {"psi": 0.2, "p_value": 0.01, "min_rows": 30}


def test_income_shifted_by_one_standard_deviation_has_drifted() -> None:
    report = compare_window(training_profile(), sample(1, 1_000, income_shift=1.0))
    assert report["drifted"] is True
    assert report["drifted_features"] == ["income"]
    income = report["features"]["income"]
    assert income["psi"] > 0.2
    assert income["statistic"] > 0.3  # a one-sd shift moves the normal CDF by up to 0.38
    assert income["p_value"] < 1e-10


def test_changed_region_mix_has_drifted() -> None:
    report = compare_window(training_profile(), sample(1, 1_000, region_mix=(0.3, 0.3, 0.4)))
    assert report["drifted_features"] == ["region"]
    region = report["features"]["region"]
    assert region["p_value"] < 1e-10
    assert region["fractions"]["east"] == pytest.approx(0.4, abs=0.05)


def test_unseen_categories_count_as_other() -> None:
    window = sample(1, 1_000)
    window["region"] = ["west"] * 300 + window["region"][300:]
    region = compare_window(training_profile(), window)["features"]["region"]
    assert region["fractions"][OTHER] == 300 / 1_000
    assert region["drifted"] is True


def test_small_window_is_insufficient_not_drifted() -> None:
    report = compare_window(training_profile(), sample(1, 29, income_shift=5.0))
    assert report["insufficient"] is True
    assert report["drifted"] is False
    assert report["drifted_features"] == []
    assert report["features"] == {}
    assert compare_window(training_profile(), sample(1, 30))["insufficient"] is False


def test_missing_values_are_profiled_and_compared() -> None:
    values: list[Any] = [float(i) for i in range(90)] + [None] * 4 + [math.nan] * 3 + ["", "NA", " "]
    profile = reference_profile({"x": values, "c": ["a", None] * 50})
    x = profile["features"]["x"]
    assert x["kind"] == "numeric"
    assert x["missing"] == 10 / 100
    assert sum(x["fractions"]) == pytest.approx(90 / 100)
    assert profile["features"]["c"]["missing"] == 50 / 100
    assert profile["features"]["c"]["fractions"] == {"a": 50 / 100, OTHER: 0.0}

    same = compare_window(profile, {"x": values, "c": ["a", None] * 50})
    assert same["drifted"] is False
    mostly_missing = compare_window(profile, {"x": [1.0] * 20 + [None] * 80, "c": ["a", None] * 50})
    assert mostly_missing["drifted_features"] == ["x"]
    assert mostly_missing["features"]["x"]["missing"] == 80 / 100


def test_all_missing_numeric_window_has_no_ks_test_but_has_psi() -> None:
    profile = reference_profile({"x": list(range(100))})
    report = compare_window(profile, {"x": [None] * 50})
    x = report["features"]["x"]
    assert x["statistic"] is None
    assert x["p_value"] is None
    assert x["drifted"] is True  # everything moved to the missing cell


def test_numeric_strings_and_discrete_values() -> None:
    profile = reference_profile({"children": [str(i % 4) for i in range(200)]})
    children = profile["features"]["children"]
    assert children["kind"] == "numeric"
    assert children["edges"] == [0.0, 1.0, 2.0, 3.0]  # deciles of 0..3 merged to the distinct values
    assert children["fractions"] == [50 / 200, 50 / 200, 50 / 200, 50 / 200, 0 / 200]
    assert compare_window(profile, {"children": [i % 4 for i in range(100)]})["drifted"] is False
    assert compare_window(profile, {"children": [3] * 100})["drifted"] is True


def test_feature_missing_from_window_is_named() -> None:
    window = sample(1, 100)
    del window["age"]
    with pytest.raises(InvalidPayload) as caught:
        compare_window(training_profile(), window)
    assert caught.value.field == "window.age"


def test_text_in_a_numeric_feature_is_refused() -> None:
    window = sample(1, 100)
    window["score"] = ["high"] * 100
    with pytest.raises(InvalidPayload) as caught:
        compare_window(training_profile(), window)
    assert caught.value.field == "window.score"


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({}, "columns"),
        ({"x": []}, "columns"),
        ({"x": [1, 2], "y": [1]}, "columns.y"),
        ({"x": [1, math.inf]}, "columns.x.1"),
        ({"x": [1, object()]}, "columns.x.1"),
    ],
)
def test_bad_training_columns_are_refused(columns: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        reference_profile(columns)
    assert caught.value.field == field


def test_comparison_is_canonical_json() -> None:
    report = compare_window(training_profile(), sample(2, 500, income_shift=0.5))
    assert canonical_json(report) == canonical_json(
        compare_window(training_profile(), sample(2, 500, income_shift=0.5))
    )
