"""The console shows what runs used and cost: the run page (resources, host,
backend, cost at the configured rates, the versions made from it) and the model
page (each version's run cost, the source run's resources), for lineage readers only."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient
from support.usage_world import CURRENCY, UsageWorld, usage_world

__all__ = ["usage_world"]  # the fixture, imported for pytest


def _signed_in(world: UsageWorld, who: str) -> TestClient:
    http = TestClient(world.app, follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/console/login").text)
    assert token is not None
    response = http.post(
        "/console/login", data={"api_key": world.keys[who], "csrf_token": token.group(1), "next": "/console"}
    )
    assert response.status_code == 303, response.text
    return http


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_the_run_page_shows_what_the_run_used_and_what_it_cost(usage_world: UsageWorld) -> None:
    page = _signed_in(usage_world, "audrey").get(f"/console/runs/{usage_world.runs['trained']}")

    assert page.status_code == 200
    text = _text(page.text)
    assert "CPU 7200.00 s" in text
    assert "Peak memory 2000.0 MB" in text
    assert "GPU 1800.00 s · peak 4000.0 MB" in text
    assert "gpu-node-1 (local backend)" in text
    assert f"Cost 1.220000 {CURRENCY} at 0.10 per CPU-hour, 2 per GPU-hour, 0.01 per GB-hour" in text
    assert "credit v1" in text
    assert "Submitted by alice" in text


def test_the_run_page_of_a_run_that_recorded_nothing_says_so(usage_world: UsageWorld) -> None:
    page = _signed_in(usage_world, "alice").get(f"/console/runs/{usage_world.runs['unmeasured']}")

    assert page.status_code == 200
    assert "No resources recorded for this run." in page.text


def test_the_model_page_shows_each_versions_run_cost_and_the_source_runs_resources(usage_world: UsageWorld) -> None:
    http = _signed_in(usage_world, "audrey")

    page = http.get("/console/models/credit?version=1")

    assert page.status_code == 200
    text = _text(page.text)
    assert f"1.220000 {CURRENCY}" in text  # v1's run
    assert "not recorded" in text  # v2's run recorded nothing
    assert "Resources and cost of the run" in text
    assert "CPU 7200.00 s" in text
    assert f'href="/console/runs/{usage_world.runs["trained"]}"' in page.text


def test_an_unknown_run_is_a_404_page(usage_world: UsageWorld) -> None:
    page = _signed_in(usage_world, "alice").get("/console/runs/no-such-run")

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")


def test_a_role_that_may_not_read_lineage_gets_a_403_page(usage_world: UsageWorld) -> None:
    page = _signed_in(usage_world, "pat").get(f"/console/runs/{usage_world.runs['trained']}")

    assert page.status_code == 403


def test_the_run_page_needs_a_session(usage_world: UsageWorld) -> None:
    page = TestClient(usage_world.app, follow_redirects=False).get(f"/console/runs/{usage_world.runs['trained']}")

    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login")
