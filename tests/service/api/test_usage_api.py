"""Resources and cost over the API: usage per model, principal and pipeline over
a window of finish times, priced exactly at the configured rates; the run, its
manifest, its signed provenance and its model version carry them; bad query
parameters are problems; only lineage readers may ask. On SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from support.usage_world import CURRENCY, FAILED, LAPTOP, RATES, TRAINED, UsageWorld, usage_world

from domain.integrity.provenance import manifest_digest, verify_envelope

__all__ = ["usage_world"]  # the fixture, imported for pytest

RATES_JSON = {"cpu_hour": "0.10", "gpu_hour": "2", "gb_hour": "0.01", "currency": CURRENCY}


def _exact(resources: dict[str, Any]) -> Decimal:
    """The documented formula, written out again here with the configured rates."""
    cpu = Decimal(str(resources.get("cpu_seconds", 0))) / 3600 * RATES["cost_cpu_hour"]
    gpu = Decimal(str(resources.get("gpu_seconds", 0))) / 3600 * RATES["cost_gpu_hour"]
    memory_gb = Decimal(resources.get("peak_rss_bytes", 0)) / Decimal(10**9)
    memory = memory_gb * Decimal(str(resources.get("wall_seconds", 0))) / 3600 * RATES["cost_gb_hour"]
    return cpu + gpu + memory


def _usage(world: UsageWorld, **params: str) -> dict[str, Any]:
    response = world.client("audrey").get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _groups(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {group["key"]: group for group in body["groups"]}


def test_usage_per_pipeline_totals_the_runs_and_prices_them_at_the_configured_rates(usage_world: UsageWorld) -> None:
    body = _usage(usage_world, group_by="pipeline")

    groups = _groups(body)
    credit = groups["credit-lr"]
    assert (credit["runs"], credit["cpu_seconds"], credit["gpu_seconds"]) == (2, 7560.0, 1800.0)
    assert credit["gb_hours"] == pytest.approx(2.1)
    assert Decimal(credit["cost"]) == _exact(TRAINED) + _exact(FAILED) == Decimal("1.231")
    assert credit["cost"] == "1.231000"
    assert groups[None]["runs"] == 1  # the client-reported run has no pipeline
    assert Decimal(groups[None]["cost"]) == _exact(LAPTOP)
    assert body["currency"] == CURRENCY
    assert body["rates"] == RATES_JSON


def test_usage_per_principal_names_who_requested_the_runs(usage_world: UsageWorld) -> None:
    groups = _groups(_usage(usage_world, group_by="principal"))

    alice, bob = groups[usage_world.ids["alice"]], groups[usage_world.ids["bob"]]
    assert (alice["name"], alice["runs"], alice["cost"]) == ("alice", 2, "1.221100")
    assert (bob["name"], bob["runs"], bob["cost"]) == ("bob", 1, "0.011000")


def test_usage_per_model_counts_a_run_once_in_the_total(usage_world: UsageWorld) -> None:
    body = _usage(usage_world, group_by="model")

    groups = _groups(body)
    assert {key: (g["runs"], g["cost"]) for key, g in groups.items()} == {
        "credit": (1, "1.220000"),  # v2's run recorded nothing, so only v1's counts
        "churn": (1, "0.001100"),
        None: (1, "0.011000"),  # the failed run became no model version
    }
    assert (body["total"]["runs"], body["total"]["cost"]) == (3, "1.232100")


def test_a_run_without_resources_is_not_counted(usage_world: UsageWorld) -> None:
    body = _usage(usage_world, group_by="principal", since=usage_world.finished_at["unmeasured"])

    assert body["groups"] == []
    assert (body["total"]["runs"], body["total"]["cost"]) == (0, "0.000000")


def test_the_window_counts_runs_finished_from_since_up_to_but_not_including_until(usage_world: UsageWorld) -> None:
    at = usage_world.finished_at

    later = _usage(usage_world, group_by="pipeline", since=at["failed"])
    earlier = _usage(usage_world, group_by="pipeline", until=at["failed"])
    between = _usage(usage_world, group_by="pipeline", since=at["failed"], until=at["laptop"])

    assert {k: g["runs"] for k, g in _groups(later).items()} == {"credit-lr": 1, None: 1}
    assert _groups(later)["credit-lr"]["cost"] == "0.011000"
    assert {k: g["runs"] for k, g in _groups(earlier).items()} == {"credit-lr": 1}
    assert _groups(earlier)["credit-lr"]["cost"] == "1.220000"
    assert between["total"]["runs"] == 1
    assert between["since"] == at["failed"]


def test_window_times_are_read_with_their_offset(usage_world: UsageWorld) -> None:
    at = usage_world.finished_at["failed"]  # ...Z
    shifted = at.replace("Z", "+00:00")

    assert _usage(usage_world, group_by="pipeline", since=shifted)["since"] == at


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, None),
        ({"group_by": "team"}, None),
        ({"group_by": "model", "since": "yesterday"}, "since"),
        ({"group_by": "model", "until": "2026-12-01T00:00:00"}, "until"),
        ({"group_by": "model", "since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "since"),
        ({"group_by": "model", "since": "2026-12-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "since"),
    ],
)
def test_bad_query_parameters_are_a_422_problem(
    usage_world: UsageWorld, params: dict[str, str], field: str | None
) -> None:
    response = usage_world.client("alice").get("/v1/usage", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in response.text


@pytest.mark.parametrize(("who", "status"), [("alice", 200), ("audrey", 200), ("admin", 200), ("pat", 403)])
def test_only_lineage_readers_may_read_usage(usage_world: UsageWorld, who: str, status: int) -> None:
    response = usage_world.client(who).get("/v1/usage", params={"group_by": "model"})

    assert response.status_code == status


def test_usage_needs_a_key(usage_world: UsageWorld) -> None:
    from fastapi.testclient import TestClient

    response = TestClient(usage_world.app).get("/v1/usage", params={"group_by": "model"})

    assert response.status_code == 401


def test_the_run_answer_carries_its_resources_and_cost(usage_world: UsageWorld) -> None:
    run = usage_world.client("alice").get(f"/v1/runs/{usage_world.runs['trained']}").json()

    assert run["resources"] == TRAINED
    assert run["cost"] == {"amount": "1.220000", "currency": CURRENCY, "rates": RATES_JSON}


def test_a_run_that_recorded_nothing_has_no_resources_and_no_cost(usage_world: UsageWorld) -> None:
    run = usage_world.client("alice").get(f"/v1/runs/{usage_world.runs['unmeasured']}").json()

    assert (run["resources"], run["cost"]) == (None, None)


def test_the_runs_list_carries_each_runs_resources(usage_world: UsageWorld) -> None:
    runs = {run["id"]: run for run in usage_world.client("alice").get("/v1/runs").json()}

    assert runs[usage_world.runs["laptop"]]["resources"] == LAPTOP
    assert runs[usage_world.runs["unmeasured"]]["resources"] is None


def test_the_manifest_holds_the_resources_and_shows_their_cost_beside_the_document(usage_world: UsageWorld) -> None:
    body = usage_world.client("audrey").get(f"/v1/runs/{usage_world.runs['failed']}/manifest").json()

    assert body["document"]["resources"] == FAILED
    assert body["cost"]["amount"] == "0.011000"
    assert manifest_digest(body["document"]) == body["digest"]  # the cost is not part of what the digest covers
    assert body["document"]["events"][-1]["type"] == "ResourcesRecorded"


def test_a_manifest_without_resources_has_no_resources_key(usage_world: UsageWorld) -> None:
    body = usage_world.client("audrey").get(f"/v1/runs/{usage_world.runs['unmeasured']}/manifest").json()

    assert "resources" not in body["document"]
    assert body["cost"] is None


def test_the_signed_provenance_carries_the_resources_and_their_cost(usage_world: UsageWorld) -> None:
    response = usage_world.client("audrey").get(f"/v1/runs/{usage_world.runs['trained']}/provenance")

    statement = verify_envelope(response.json(), usage_world.services.ledger.signer.public_key)
    byproducts = {b["name"]: b for b in statement["predicate"]["runDetails"]["byproducts"]}
    annotations = byproducts["resources"]["annotations"]
    assert annotations["resources"] == TRAINED
    assert annotations["cost"] == {"amount": "1.220000", "currency": CURRENCY, "rates": RATES_JSON}
    assert byproducts["manifest"]["mediaType"] == "application/json"


def test_a_model_version_costs_what_its_run_cost(usage_world: UsageWorld) -> None:
    client = usage_world.client("audrey")

    first = client.get("/v1/models/credit/versions/1").json()
    second = client.get("/v1/models/credit/versions/2").json()

    assert first["cost"]["amount"] == "1.220000"
    assert second["cost"] is None
