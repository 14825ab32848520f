"""Shared fixtures: every ledger test runs on SQLite and on the real PostgreSQL.

PostgreSQL tests use ``MLLEDGER_TEST_DATABASE_URL`` (default
postgresql://postgres@127.0.0.1:5432/test), each in its own schema, dropped
afterwards. When the server is unreachable they skip with the reason, except
under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ledger import drop_schema, make_settings, require_postgres
from support.ray_cluster import RayCluster, remove_cluster, start_cluster

from service.bootstrap import Services, open_services
from service.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The database the test runs on."""
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for an empty ledger of its own."""
    settings = make_settings(backend, tmp_path / "data")
    yield settings
    if backend == "postgres":
        drop_schema(settings.database_schema)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """An opened, migrated ledger."""
    opened = open_services(settings, migrate=True)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One real Ray head per test session, on loopback with free ports and token authentication on.

    Without Ray installed (the ``ray`` extra, which ``make install`` installs) the tests that use it
    skip with the reason, except under CI=true, where they fail.
    """
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed (pip install -e '.[ray]')")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    cluster = start_cluster()
    yield cluster
    remove_cluster(cluster)
