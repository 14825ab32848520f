"""Isolated test ledgers: settings on SQLite or on a schema of the real PostgreSQL, and the CLI run against them.

PostgreSQL tests use ``MLLEDGER_TEST_DATABASE_URL`` (default
postgresql://postgres@127.0.0.1:5432/test), each in its own schema, dropped
afterwards. When the server is unreachable they skip with the reason, except
under CI=true, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.settings import Settings

ADMIN_KEY = "mll_test-admin-key-0123456789abcdefghij"
PG_URL = os.environ.get("MLLEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[2]


@cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip (or fail under CI) when PostgreSQL is unreachable."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def make_settings(backend: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a fresh, isolated ledger on ``backend`` (admin key: ADMIN_KEY)."""
    overrides.setdefault("admin_api_key", ADMIN_KEY)
    if backend == "postgres":
        schema = f"t_{uuid.uuid4().hex[:16]}"
        return Settings(
            environment="test",
            data_dir=data_dir,
            database_url=PG_URL,
            database_schema=schema,
            **overrides,  # type: ignore[arg-type]
        )
    return Settings(environment="test", data_dir=data_dir, **overrides)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a subprocess the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    env.update(
        {
            "MLLEDGER_ENVIRONMENT": settings.environment,
            "MLLEDGER_DATA_DIR": str(settings.data_dir),
            "MLLEDGER_DATABASE_URL": settings.database_url,
            "MLLEDGER_DATABASE_SCHEMA": settings.database_schema,
            "MLLEDGER_ADMIN_API_KEY": settings.admin_api_key or "",
            "MLLEDGER_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "MLLEDGER_HEARTBEAT_TIMEOUT_SECONDS": str(settings.heartbeat_timeout_seconds),
        }
    )
    return env


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``mlledger ARGS`` in a subprocess against ``settings``."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
