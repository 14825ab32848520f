"""A run's resources: what is accepted, what it costs at the configured rates
(exact decimal arithmetic), and the Run's one ``ResourcesRecorded`` event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from domain.errors import InvalidPayload, RuleViolated, RunNotClaimed
from domain.run import Run
from domain.usage import (
    InvalidResources,
    Rates,
    ResourcesAlreadyRecorded,
    amount,
    check_resources,
    cost,
    gb_hours,
    priced,
    total_cost,
)

RUNNER = "runner:r1"
DIGEST = "sha256:" + "ab" * 32
RATES = Rates(cpu_hour=Decimal("0.04"), gpu_hour=Decimal("3.00"), gb_hour=Decimal("0.005"))
MEASURED = {
    "cpu_seconds": 1.5,
    "peak_rss_bytes": 200_000_000,
    "wall_seconds": 2.25,
    "gpu_seconds": 2.25,
    "peak_gpu_memory_bytes": 1_073_741_824,
    "host": "node-7",
    "backend": "local",
}


def _run(mode: str = "runner") -> Run:
    return Run(
        name="train",
        mode=mode,
        pipeline_id="pipeline-1" if mode == "runner" else None,
        pipeline_version=1 if mode == "runner" else None,
        spec_digest=DIGEST if mode == "runner" else None,
        dataset_version_ids=["dataset-1"],
        code_version_id=None,
        params={},
        seed=7,
        device="cpu",
        reproduces=None,
        actor="user:alice",
    )


def _running_run() -> Run:
    run = _run()
    run.claim("r1", "host-1", actor=RUNNER)
    run.capture_environment({"python": "3.11"}, DIGEST, "cpu", None, actor=RUNNER)
    return run


# -- validation -----------------------------------------------------------------


def test_measured_resources_are_accepted_as_they_are() -> None:
    assert check_resources(MEASURED) == MEASURED


def test_a_whole_float_byte_count_is_kept_as_an_integer() -> None:
    checked = check_resources({"peak_rss_bytes": 1024.0})

    assert checked == {"peak_rss_bytes": 1024}
    assert isinstance(checked["peak_rss_bytes"], int)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"cpu_seconds": -0.1}, "resources.cpu_seconds"),
        ({"cpu_seconds": float("nan")}, "resources.cpu_seconds"),
        ({"wall_seconds": float("inf")}, "resources.wall_seconds"),
        ({"gpu_seconds": "12"}, "resources.gpu_seconds"),
        ({"cpu_seconds": True}, "resources.cpu_seconds"),
        ({"peak_rss_bytes": 10.5}, "resources.peak_rss_bytes"),
        ({"peak_gpu_memory_bytes": 2**60}, "resources.peak_gpu_memory_bytes"),
        ({"host": ""}, "resources.host"),
        ({"backend": "x" * 201}, "resources.backend"),
        ({"host": 7}, "resources.host"),
        ({"cpu_seconds": 1.0, "disk_bytes": 5}, "resources"),
        ({}, "resources"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(resources: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidResources) as refused:
        check_resources(resources)

    assert refused.value.field == field
    assert isinstance(refused.value, InvalidPayload)


def test_resources_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(InvalidResources):
        check_resources([("cpu_seconds", 1.0)])


# -- cost -----------------------------------------------------------------------


def test_an_hour_of_each_resource_costs_exactly_its_rate() -> None:
    assert cost({"cpu_seconds": 3600}, RATES) == Decimal("0.04")
    assert cost({"gpu_seconds": 3600}, RATES) == Decimal("3.00")
    assert cost({"peak_rss_bytes": 10**9, "wall_seconds": 3600}, RATES) == Decimal("0.005")


def test_the_cost_follows_the_documented_formula_to_the_last_digit() -> None:
    expected = (
        Decimal("1.5") / 3600 * Decimal("0.04")
        + Decimal("2.25") / 3600 * Decimal("3.00")
        + Decimal(200_000_000) / Decimal(10**9) * (Decimal("2.25") / 3600) * Decimal("0.005")
    )

    assert cost(MEASURED, RATES) == expected
    assert priced(MEASURED, RATES) == {"amount": str(amount(expected)), "currency": "USD"}
    assert priced(MEASURED, RATES)["amount"] == "0.001892"


def test_recorded_figures_enter_as_the_decimals_they_read_as() -> None:
    # 0.1 s is one tenth exactly, not the binary float nearest to it.
    assert cost({"cpu_seconds": 0.1}, Rates(Decimal(36000), Decimal(0), Decimal(0))) == Decimal("1.0")


def test_gb_hours_are_the_peak_memory_held_for_the_wall_time() -> None:
    assert gb_hours({"peak_rss_bytes": 2 * 10**9, "wall_seconds": 1800}) == Decimal(1)
    assert gb_hours({"peak_rss_bytes": 2 * 10**9}) == 0


def test_missing_figures_cost_nothing() -> None:
    assert cost({"host": "node-7"}, RATES) == 0


def test_a_total_is_the_exact_sum_rounded_once() -> None:
    runs = [{"cpu_seconds": 0.0001}] * 3  # each costs 1.1e-9 at 0.04 per hour: rounds to 0 alone
    one = cost(runs[0], RATES)

    assert amount(one) == 0
    assert total_cost(runs, RATES) == 3 * one
    assert amount(total_cost([{"cpu_seconds": 900}] * 4, RATES)) == Decimal("0.040000")


def test_amounts_round_half_to_even_at_six_places() -> None:
    assert amount(Decimal("0.0000005")) == Decimal("0.000000")
    assert amount(Decimal("0.0000015")) == Decimal("0.000002")


def test_rates_read_as_decimal_strings() -> None:
    assert RATES.to_json() == {"cpu_hour": "0.04", "gpu_hour": "3.00", "gb_hour": "0.005", "currency": "USD"}


# -- the Run aggregate --------------------------------------------------------------


def test_a_running_run_records_its_resources() -> None:
    run = _running_run()

    run.record_resources(MEASURED, actor=RUNNER)

    assert run.resources == MEASURED
    event = run.collect_events()[-1]
    assert isinstance(event, Run.ResourcesRecorded)
    assert event.resources == MEASURED
    assert event.actor == RUNNER


def test_a_run_that_ended_still_records_what_it_used() -> None:
    run = _running_run()
    run.finish("cancelled", "cancelled by alice", actor="user:alice")

    run.record_resources({"cpu_seconds": 4.0, "wall_seconds": 5.0}, actor=RUNNER)

    assert run.resources == {"cpu_seconds": 4.0, "wall_seconds": 5.0}


def test_a_client_reported_run_records_resources_its_client_measured() -> None:
    run = _run("client")

    run.record_resources({"cpu_seconds": 12.0}, actor="user:alice")

    assert run.resources == {"cpu_seconds": 12.0}


def test_resources_are_recorded_once() -> None:
    run = _running_run()
    run.record_resources(MEASURED, actor=RUNNER)

    with pytest.raises(ResourcesAlreadyRecorded) as refused:
        run.record_resources(MEASURED, actor=RUNNER)

    assert isinstance(refused.value, RuleViolated)
    assert refused.value.type_slug == "rule-violated"


def test_a_run_no_runner_executed_records_no_resources() -> None:
    run = _run()
    run.finish("cancelled", None, actor="user:alice")

    with pytest.raises(RunNotClaimed):
        run.record_resources(MEASURED, actor=RUNNER)


def test_invalid_resources_record_no_event() -> None:
    run = _running_run()
    run.collect_events()

    with pytest.raises(InvalidResources):
        run.record_resources({"cpu_seconds": -1}, actor=RUNNER)

    assert run.collect_events() == []
    assert run.resources is None


def test_a_run_rebuilt_from_its_events_keeps_its_resources() -> None:
    run = _running_run()
    run.record_resources(MEASURED, actor=RUNNER)

    rebuilt: Aggregate | None = None
    for event in run.collect_events():
        rebuilt = event.mutate(rebuilt)

    assert isinstance(rebuilt, Run)
    assert rebuilt.resources == MEASURED
