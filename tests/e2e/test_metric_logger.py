"""The client's metric logger records many single points in a few signed batches."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support.governance_world import make_world

from service.app import create_app
from service.bootstrap import Services


def test_buffered_points_are_recorded_in_batches_and_all_arrive(services: Services) -> None:
    with TestClient(create_app(services.settings, services=services)) as http:
        world = make_world(http)
        alice = world.people["alice"].client
        run = alice.start_run(name="logged")
        before = services.ledger.position()

        with alice.metric_logger(run.id, flush_every=100) as metrics:
            for step in range(250):
                metrics.log("loss", 1.0 / (step + 1), step)
            assert services.ledger.position() - before == 2  # two full batches so far
        position = services.ledger.position()

        assert position - before == 3
        points = alice.request(
            "GET", f"/v1/runs/{run.id}/metrics/loss", params={"min_position": position, "limit": 1000}
        )
        values = points if isinstance(points, list) else points["points"]
        assert [p["step"] for p in values] == list(range(250))
        assert values[-1]["value"] == 1.0 / 250
