"""Runs that recorded what they used, finished one after another, for the usage,
cost and run-page tests: two principals, one pipeline, two models, and rates
chosen so that every cost is a short exact decimal."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mlledger.client import LedgerClient
from projections import registry as r
from projections.base import ProjectionRunner
from projections.manifests import Manifests
from service.app import create_app
from service.bootstrap import Services, open_services
from support.governance_world import issued, second_admin
from support.ledger import ADMIN_KEY, drop_schema, make_settings, require_postgres

RATES = {"cost_cpu_hour": Decimal("0.10"), "cost_gpu_hour": Decimal("2"), "cost_gb_hour": Decimal("0.01")}
CURRENCY = "EUR"
SPEC = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "features": ["a"],
    "target": "y",
    "task": "classification",
}
# 2 CPU-hours, half a GPU-hour, 2 GB for an hour: 0.20 + 1.00 + 0.02 = 1.22
TRAINED = {
    "cpu_seconds": 7200.0,
    "gpu_seconds": 1800.0,
    "peak_gpu_memory_bytes": 4_000_000_000,
    "peak_rss_bytes": 2_000_000_000,
    "wall_seconds": 3600.0,
    "host": "gpu-node-1",
    "backend": "local",
}
# 0.1 CPU-hour, 1 GB for 0.1 hour: 0.01 + 0.001 = 0.011
FAILED = {"cpu_seconds": 360.0, "peak_rss_bytes": 1_000_000_000, "wall_seconds": 360.0, "host": "cpu-node-2"}
# 0.01 CPU-hour, 0.5 GB for 0.02 hour: 0.001 + 0.0001 = 0.0011
LAPTOP = {"cpu_seconds": 36.0, "peak_rss_bytes": 500_000_000, "wall_seconds": 72.0, "host": "laptop"}


@dataclass
class UsageWorld:
    """The ledger, its API, keys by person and run ids by name (``trained``, ``failed``, ``laptop``, ``unmeasured``)."""

    services: Services
    app: FastAPI
    keys: dict[str, str]
    ids: dict[str, str]
    runs: dict[str, str]
    finished_at: dict[str, str]

    def client(self, who: str) -> TestClient:
        """A client that calls the API as ``who``."""
        return TestClient(self.app, headers={"Authorization": f"Bearer {self.keys[who]}"})


def digest(text: str) -> str:
    """A sha256 digest of ``text``."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def catch_up(services: Services) -> None:
    """Project the log (the manifests too, where the service does not run them)."""
    services.runner.catch_up()
    if Manifests.name not in services.runner.projections:
        ProjectionRunner(services.writer_engine, services.runner.select_notifications, [Manifests()]).catch_up()


def _runner_run(services: Services, actor: str, name: str) -> str:
    return services.ledger.start_run(
        name=name,
        mode="runner",
        pipeline="credit-lr",
        pipeline_version=1,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=1,
        device="cpu",
        actor=actor,
    ).id


def _executed(services: Services, run_id: str) -> None:
    ledger = services.ledger
    ledger.claim_run(run_id, "runner-1", "gpu-node-1")
    ledger.record_environment(run_id, "runner-1", {"python": "3.11"}, digest("env"), "cpu", None)
    artifact = digest(f"model of {run_id}")
    ledger.record_artifact(run_id, "model.pkl", artifact, 10, "application/octet-stream", actor="runner:runner-1")


def _build(services: Services, app: FastAPI, http: TestClient) -> UsageWorld:
    ledger = services.ledger
    admin = LedgerClient(api_key=ADMIN_KEY, http=http)
    second = second_admin(http, admin)
    keys, ids = {"admin": ADMIN_KEY}, {}
    for name, roles in [
        ("alice", ["data_scientist"]),
        ("bob", ["data_scientist"]),
        ("audrey", ["auditor"]),
        ("pat", ["predictor"]),
    ]:
        ids[name] = admin.create_principal(name, roles).id
        keys[name] = issued(admin, second, ids[name])
    ledger.add_pipeline_spec(name="credit-lr", kind="sklearn", spec=SPEC, actor=ids["alice"])
    runs, finished_at = {}, {}

    def finished(name: str) -> None:
        catch_up(services)
        with services.engine.connect() as conn:
            t = r.reg_runs
            finished_at[name] = conn.execute(sa.select(t.c.finished_at).where(t.c.id == runs[name])).scalar_one()

    runs["trained"] = _runner_run(services, ids["alice"], "trained")
    _executed(services, runs["trained"])
    ledger.record_resources(runs["trained"], TRAINED, actor="runner:runner-1")
    ledger.finish_run(runs["trained"], "succeeded", None, actor="runner:runner-1")
    finished("trained")

    runs["failed"] = _runner_run(services, ids["bob"], "failed")
    _executed(services, runs["failed"])
    ledger.finish_run(runs["failed"], "failed", "out of memory", actor="runner:runner-1")
    ledger.record_resources(runs["failed"], FAILED, actor="runner:runner-1")  # reported after the end
    finished("failed")

    runs["laptop"] = ledger.start_run(
        name="laptop",
        mode="client",
        pipeline=None,
        pipeline_version=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=1,
        device="cpu",
        actor=ids["alice"],
    ).id
    ledger.record_artifact(runs["laptop"], "model.pkl", digest("laptop"), 5, "application/octet-stream", ids["alice"])
    ledger.record_resources(runs["laptop"], LAPTOP, actor=ids["alice"])
    ledger.finish_run(runs["laptop"], "succeeded", None, actor=ids["alice"])
    finished("laptop")

    runs["unmeasured"] = _runner_run(services, ids["bob"], "unmeasured")
    _executed(services, runs["unmeasured"])
    ledger.finish_run(runs["unmeasured"], "succeeded", None, actor="runner:runner-1")
    finished("unmeasured")

    no_gate: dict[str, Any] = {"min_impact_ratio": None}
    for model, run in (("credit", "trained"), ("churn", "laptop"), ("credit", "unmeasured")):
        ledger.register_model_version(
            model_name=model,
            run_id=runs[run],
            artifact_name="model.pkl",
            input_schema=[{"name": "a", "type": "number"}],
            policy=no_gate,
            actor=ids["alice"],
        )
    catch_up(services)
    return UsageWorld(services, app, keys, ids, runs, finished_at)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def usage_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageWorld]:
    """The world on SQLite and on the real PostgreSQL."""
    if request.param == "postgres":
        require_postgres()
    data = Path(tmp_path_factory.mktemp("usage")) / "data"
    settings = make_settings(request.param, data, cost_currency=CURRENCY, **RATES)
    services = open_services(settings, migrate=True)
    try:
        app = create_app(services.settings, run_projector=False, services=services)
        with TestClient(app) as http:
            yield _build(services, app, http)
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)
