"""Fixtures of the end-to-end tests of runners outside the service (local, Ray, key custody)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ledger import drop_schema, make_settings, require_postgres
from support.runner_http import RunnerPrincipal, ledger_api, runner_principal

from service.bootstrap import Services, open_services


@pytest.fixture
def pg_services(tmp_path: Path) -> Iterator[Services]:
    """A ledger on PostgreSQL (a schema of its own) with quick heartbeats: 0.5 s, 4 s timeout."""
    require_postgres()
    settings = make_settings("postgres", tmp_path / "data", heartbeat_seconds=0.5, heartbeat_timeout_seconds=4)
    services = open_services(settings, migrate=True)
    yield services
    services.close()
    drop_schema(settings.database_schema)


@pytest.fixture
def api(pg_services: Services, tmp_path: Path) -> Iterator[tuple[str, RunnerPrincipal]]:
    """The ledger API of ``pg_services`` in a subprocess, and a runner principal."""
    with ledger_api(pg_services, tmp_path / "api.log") as url:
        yield url, runner_principal(pg_services)
