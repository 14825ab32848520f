"""MLflow search syntax over loaded records: filter strings, negations of
absent tags, ordering and page tokens (no server)."""

from __future__ import annotations

import pytest

from domain.errors import InvalidPayload
from service.api.mlflow_search import Searchable, matches, page, page_offset, parse_filter, sort_records

RUNS = [
    Searchable(metrics={"auc": 0.91}, params={"depth": "3"}, tags={"team": "risk"}, attributes={"start_time": 3}),
    Searchable(metrics={"auc": 0.70}, params={"depth": "3"}, attributes={"start_time": 2}),
    Searchable(metrics={"auc": 0.88}, params={"depth": "5"}, tags={"team": "ops"}, attributes={"start_time": 1}),
]


def _chosen(text: str, *, absent_negates: bool = False) -> list[int]:
    clauses = parse_filter(text, ("start_time",))
    return [i for i, r in enumerate(RUNS) if matches(clauses, r, absent_negates=absent_negates)]


def test_filters_compare_metrics_as_numbers_and_the_rest_as_strings() -> None:
    assert _chosen("metrics.auc > 0.75 and params.depth = '3'") == [0]
    assert _chosen("tags.team LIKE 'r%'") == [0]
    assert _chosen("tags.team ILIKE 'OPS'") == [2]
    assert _chosen("params.depth IN ('5', '7')") == [2]
    assert _chosen("attributes.start_time >= 2") == [0, 1]


def test_an_absent_tag_satisfies_a_negation_only_where_the_registry_asks() -> None:
    assert _chosen("tags.`team` != 'risk'") == [2]
    assert _chosen("tags.`team` != 'risk'", absent_negates=True) == [1, 2]
    assert _chosen("tags.team NOT IN ('ops')", absent_negates=True) == [0, 1]
    assert _chosen("params.missing != 'x'", absent_negates=True) == []


@pytest.mark.parametrize(
    "text", ["metrics.auc >>> 1", "metrics.auc > 'x'", "params.depth > 3", "tags.team = 'a' and", "name IN 'a'"]
)
def test_a_malformed_filter_is_refused_naming_the_filter(text: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        parse_filter(text)
    assert refused.value.field == "filter"


def test_order_then_pages_cover_every_record_once() -> None:
    ordered = sort_records(list(RUNS), ["metrics.auc DESC"], [])
    first, token = page(ordered, None, 2)
    rest, last = page(ordered, token, 2)

    assert [r.metrics["auc"] for r in first + rest] == [0.91, 0.88, 0.70]
    assert last is None and page_offset(token) == 2
    with pytest.raises(InvalidPayload):
        page_offset("not-a-token")
