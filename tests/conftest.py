"""Shared fixtures: every ledger test runs on SQLite and on the real PostgreSQL.

PostgreSQL tests use ``MLLEDGER_TEST_DATABASE_URL`` (default
postgresql://postgres@127.0.0.1:5432/test), each in its own schema, dropped
afterwards. When the server is unreachable they skip with the reason, except
under CI=true, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ledger import drop_schema, make_settings, require_postgres

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
