"""A model call's answers by column, split back to the requests whose rows they were."""

from __future__ import annotations

from service.serving.inference import Inferred


def test_a_call_is_split_into_consecutive_parts_per_request() -> None:
    inferred = Inferred([{"y": 0}, {"y": 1}, {"y": 2}], [[], [{"f": "a"}], []], [0.1, 0.2, 0.3])

    first, second = inferred.split([1, 2])

    assert list(first.rows()) == [({"y": 0}, [], 0.1)]
    assert list(second.rows()) == [({"y": 1}, [{"f": "a"}], 0.2), ({"y": 2}, [], 0.3)]


def test_without_explanations_every_row_has_no_base_value() -> None:
    inferred = Inferred([{"y": 0}, {"y": 1}], [[], []], None)

    (part,) = inferred.split([2])

    assert [base for _, _, base in part.rows()] == [None, None]
    assert len(part) == 2
