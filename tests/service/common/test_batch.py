"""Run the batch, else each item alone."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from service.common.batch import Failed, batch_else_each


def _doubles(items: Sequence[int]) -> list[int]:
    if any(item < 0 for item in items):
        raise ValueError(f"negative in {list(items)}")
    return [2 * item for item in items]


def _double(item: int) -> int:
    return _doubles([item])[0]


def test_a_batch_that_succeeds_is_run_once() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        return _doubles(items)

    assert list(batch_else_each(run, _double, [1, 2, 3])) == [2, 4, 6]
    assert calls == [[1, 2, 3]]


def test_when_the_batch_fails_only_the_bad_items_fail() -> None:
    outcomes = batch_else_each(_doubles, _double, [1, -2, 3])
    assert outcomes[0] == 2 and outcomes[2] == 6
    failed = outcomes[1]
    assert isinstance(failed, Failed) and str(failed.error) == "negative in [-2]"


def test_a_batch_of_one_is_not_run_again() -> None:
    alone: list[int] = []

    def run_one(item: int) -> int:
        alone.append(item)
        return _double(item)

    (outcome,) = batch_else_each(_doubles, run_one, [-1])
    assert isinstance(outcome, Failed) and str(outcome.error) == "negative in [-1]"
    assert alone == []


def test_a_batch_giving_the_wrong_number_of_results_counts_as_failed() -> None:
    outcomes = batch_else_each(lambda items: [0], _double, [1, 2])
    assert list(outcomes) == [2, 4]


def test_an_interrupt_is_not_caught() -> None:
    def run(items: list[int]) -> list[int]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch_else_each(run, _double, [1, 2])
