"""Tests of domain.statistics.fairness on a 60-row table whose every figure is worked out by hand.

The table, by (race, sex, actual, decision) with "yes" the positive label:

    race sex | yes/yes yes/no no/yes no/no | rows
    A    F   |    4      1      2     8   |  15
    B    F   |    2      2      0     6   |  10
    A    M   |    6      0      3    12   |  21
    B    M   |    3      0      0    10   |  13
    C    M   |    0      0      1     0   |   1   (1/60 = 1.7%: under 2%, excluded)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from domain.statistics.fairness import DEFAULT_MIN_IMPACT_RATIO, fairness_report, impact_ratio_violations

CELLS = [
    # race, sex, actual, decision, count
    ("A", "F", "yes", "yes", 4),
    ("A", "F", "yes", "no", 1),
    ("A", "F", "no", "yes", 2),
    ("A", "F", "no", "no", 8),
    ("B", "F", "yes", "yes", 2),
    ("B", "F", "yes", "no", 2),
    ("B", "F", "no", "no", 6),
    ("A", "M", "yes", "yes", 6),
    ("A", "M", "no", "yes", 3),
    ("A", "M", "no", "no", 12),
    ("B", "M", "yes", "yes", 3),
    ("B", "M", "no", "no", 10),
    ("C", "M", "no", "yes", 1),
]


def table() -> tuple[list[str], list[str], dict[str, list[str]]]:
    rows = [(race, sex, actual, decision) for race, sex, actual, decision, count in CELLS for _ in range(count)]
    return (
        [r[2] for r in rows],
        [r[3] for r in rows],
        {"sex": [r[1] for r in rows], "race": [r[0] for r in rows]},
    )


def report(**options: Any) -> dict[str, Any]:
    y_true, y_pred, attributes = table()
    return fairness_report(y_true, y_pred, attributes, positive="yes", **options)


def entry(rep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in [*rep["attributes"], *rep["intersections"]] if e["name"] == name)


def group(rep: dict[str, Any], name: str, label: str) -> dict[str, Any]:
    return next(g for g in entry(rep, name)["groups"] if g["group"] == label)


def test_report_header_and_order() -> None:
    rep = report()
    assert rep["n_rows"] == 60
    assert rep["positive"] == "yes"
    assert rep["min_share"] == 0.02
    assert [e["name"] for e in rep["attributes"]] == ["race", "sex"]
    assert [e["name"] for e in rep["intersections"]] == ["race & sex"]
    assert [g["group"] for g in entry(rep, "race")["groups"]] == ["A", "B", "C"]


def test_counts_and_rates_per_group() -> None:
    female = group(report(), "sex", "F")
    assert female["n"] == 25
    assert female["share"] == 25 / 60
    assert female["selected"] == 8
    assert female["selection_rate"] == 8 / 25
    assert female["positives"] == 9
    assert female["true_positives"] == 6
    assert female["tpr"] == 6 / 9
    assert female["accuracy"] == 20 / 25
    male = group(report(), "sex", "M")
    assert (male["n"], male["selected"], male["positives"], male["true_positives"]) == (35, 13, 9, 9)
    assert male["accuracy"] == 31 / 35


def test_impact_ratio_is_relative_to_the_highest_selection_rate() -> None:
    sex = entry(report(), "sex")
    assert sex["highest_selection_rate"] == 13 / 35
    assert group(report(), "sex", "F")["impact_ratio"] == (8 / 25) / (13 / 35)
    assert group(report(), "sex", "M")["impact_ratio"] == 1.0
    assert sex["min_impact_ratio"] == (8 / 25) / (13 / 35)


def test_group_under_two_percent_is_reported_but_left_out_of_the_ratio() -> None:
    rep = report()
    tiny = group(rep, "race", "C")
    assert tiny["share"] == 1 / 60
    assert tiny["excluded"] is True
    assert tiny["selection_rate"] == 1 / 1
    assert tiny["impact_ratio"] is None
    race = entry(rep, "race")
    # Had C (selection rate 1) counted, A would fall to 15/36 and B to 5/23.
    assert race["highest_selection_rate"] == 15 / 36
    assert group(rep, "race", "A")["impact_ratio"] == 1.0
    assert group(rep, "race", "B")["impact_ratio"] == (5 / 23) / (15 / 36)
    assert race["min_impact_ratio"] == (5 / 23) / (15 / 36)


def test_with_no_minimum_share_the_tiny_group_becomes_the_reference() -> None:
    rep = report(min_share=0.0)
    assert group(rep, "race", "C")["excluded"] is False
    assert entry(rep, "race")["highest_selection_rate"] == 1.0
    assert group(rep, "race", "A")["impact_ratio"] == 15 / 36


def test_tpr_and_accuracy_differences_skip_excluded_groups() -> None:
    rep = report()
    race = entry(rep, "race")
    assert group(rep, "race", "A")["tpr"] == 10 / 11
    assert group(rep, "race", "B")["tpr"] == 5 / 7
    assert race["tpr_difference"] == 10 / 11 - 5 / 7
    assert group(rep, "race", "A")["accuracy"] == 30 / 36
    assert group(rep, "race", "B")["accuracy"] == 21 / 23
    assert group(rep, "race", "C")["accuracy"] == 0.0  # C's accuracy of 0 would have widened the gap
    assert race["accuracy_difference"] == 21 / 23 - 30 / 36
    assert entry(rep, "sex")["tpr_difference"] == 9 / 9 - 6 / 9
    assert entry(rep, "sex")["accuracy_difference"] == 31 / 35 - 20 / 25


def test_tpr_is_none_for_a_group_without_actual_positives() -> None:
    tiny = group(report(), "race", "C")
    assert tiny["positives"] == 0
    assert tiny["tpr"] is None


def test_intersection_groups() -> None:
    rep = report()
    both = entry(rep, "race & sex")
    assert both["attributes"] == ["race", "sex"]
    assert [g["group"] for g in both["groups"]] == [
        "race=A & sex=F",
        "race=A & sex=M",
        "race=B & sex=F",
        "race=B & sex=M",
        "race=C & sex=M",
    ]
    bf = group(rep, "race & sex", "race=B & sex=F")
    assert bf["values"] == {"race": "B", "sex": "F"}
    assert (bf["n"], bf["selected"], bf["positives"], bf["true_positives"]) == (10, 2, 4, 2)
    assert bf["share"] == 10 / 60
    assert bf["selection_rate"] == 2 / 10
    assert bf["tpr"] == 2 / 4
    assert bf["accuracy"] == 8 / 10
    assert both["highest_selection_rate"] == 9 / 21
    assert bf["impact_ratio"] == (2 / 10) / (9 / 21)
    assert group(rep, "race & sex", "race=C & sex=M")["excluded"] is True
    assert both["min_impact_ratio"] == (2 / 10) / (9 / 21)
    assert both["tpr_difference"] == 6 / 6 - 2 / 4


def test_intersections_can_be_left_out() -> None:
    assert report(intersections=False)["intersections"] == []


def test_violations_below_the_default_threshold_lowest_first() -> None:
    found = impact_ratio_violations(report())
    assert DEFAULT_MIN_IMPACT_RATIO == 0.8
    assert [(v["attribute"], v["group"], v["impact_ratio"]) for v in found] == [
        ("race & sex", "race=B & sex=F", (2 / 10) / (9 / 21)),
        ("race", "B", (5 / 23) / (15 / 36)),
        ("race & sex", "race=B & sex=M", (3 / 13) / (9 / 21)),
    ]
    assert found[1]["values"] == {"race": "B"}
    assert found[1]["selection_rate"] == 5 / 23


def test_threshold_moves_what_counts_as_a_violation() -> None:
    # sex F at (8/25)/(13/35) = 0.8615 and race=A & sex=F at (6/15)/(9/21) = 0.9333 join at 0.95.
    groups = [v["group"] for v in impact_ratio_violations(report(), threshold=0.95)]
    assert groups == ["race=B & sex=F", "B", "race=B & sex=M", "F", "race=A & sex=F"]
    assert impact_ratio_violations(report(), threshold=0.4) == []


def test_excluded_group_is_never_a_violation() -> None:
    y_true = ["yes"] * 2 + ["no"] * 58
    y_pred = ["yes"] * 30 + ["no"] * 30
    attributes = {"site": ["x"] * 59 + ["y"]}  # y: one row, selected 0 of 1
    rep = fairness_report(y_true, y_pred, attributes, positive="yes")
    assert group(rep, "site", "y")["selection_rate"] == 0.0
    assert impact_ratio_violations(rep) == []


def test_no_selections_give_no_ratios() -> None:
    rep = fairness_report(["yes", "no"] * 5, ["no"] * 10, {"sex": ["F", "M"] * 5}, positive="yes")
    sex = entry(rep, "sex")
    assert sex["highest_selection_rate"] == 0.0
    assert [g["impact_ratio"] for g in sex["groups"]] == [None, None]
    assert sex["min_impact_ratio"] is None
    assert impact_ratio_violations(rep) == []


def test_missing_and_typed_group_values() -> None:
    attributes = {"age_over_40": [True, False, None, math.nan, "", True], "band": [1, 2, 2, 1, 1.5, np.int64(2)]}
    rep = fairness_report([1, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0], attributes, positive=1, intersections=False)
    assert [g["group"] for g in entry(rep, "age_over_40")["groups"]] == ["(missing)", "false", "true"]
    missing = group(rep, "age_over_40", "(missing)")
    assert (missing["n"], missing["selected"]) == (3, 1)
    assert [g["group"] for g in entry(rep, "band")["groups"]] == ["1", "1.5", "2"]
    assert group(rep, "band", "2")["n"] == 3


def test_report_is_canonical_json() -> None:
    rep = report()
    assert canonical_json(rep) == canonical_json(report())


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"y_true": []}, "y_true"),
        ({"y_pred": ["yes"] * 59}, "y_pred"),
        ({"attributes": {"race": ["A"] * 61}}, "attributes.race"),
        ({"attributes": {}}, "attributes"),
        ({"y_true": ["yes", math.nan] + ["no"] * 58}, "y_true.1"),
        ({"attributes": {"race": ["A", object()] + ["B"] * 58}}, "attributes.race.1"),
        ({"attributes": {"race": ["A", math.inf] + ["B"] * 58}}, "attributes.race.1"),
        ({"positive": "hired"}, "positive"),
        ({"positive": None}, "positive"),
        ({"min_share": 1.0}, "min_share"),
        ({"min_share": -0.1}, "min_share"),
    ],
)
def test_bad_input_names_the_field(arguments: dict[str, Any], field: str) -> None:
    y_true, y_pred, attributes = table()
    call: dict[str, Any] = {"y_true": y_true, "y_pred": y_pred, "attributes": attributes, "positive": "yes"}
    call.update(arguments)
    with pytest.raises(InvalidPayload) as caught:
        fairness_report(call.pop("y_true"), call.pop("y_pred"), call.pop("attributes"), **call)
    assert caught.value.field == field


def test_violation_threshold_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        impact_ratio_violations(report(), threshold=1.5)
    assert caught.value.field == "threshold"
