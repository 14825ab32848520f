"""The typed client creates, lists and downloads export bundles, and the bundle verifies."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from support.governance_world import approve, make_world, train_and_register

from service.app import create_app
from service.bootstrap import Services
from service.exports.verify_bundle import verify_bundle


def test_an_auditor_exports_and_a_regulator_downloads_through_the_client(services: Services, tmp_path: Path) -> None:
    with TestClient(create_app(services.settings, services=services)) as http:
        world = make_world(http)
        number = train_and_register(world, "alice", "credit")
        approve(world, "bob", "credit", number)
        regulator = world.add("rita", ["regulator"])
        services.runner.catch_up()

        created = world.people["audrey"].client.create_export("credit", share_with=[regulator.id])
        listed = regulator.client.exports()
        data = regulator.client.download_export(created["id"])

    assert [e["id"] for e in listed] == [created["id"]]
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(data)
    summary = verify_bundle(bundle)
    assert summary.events == created["events"]
