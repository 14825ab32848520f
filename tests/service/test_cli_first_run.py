"""First run: every command that opens an existing ledger, pointed where there is none yet, says so in one
line and how to create one, exits non-zero, and leaves the data directory and the database as they were."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from support.ledger import PG_URL, run_cli

from service.settings import Settings

COMMANDS_ON_AN_EXISTING_LEDGER = [
    ["verify"],
    ["export", "--model", "credit-risk", "--out", "{tmp}/bundle.zip"],
    ["project"],
    ["project", "--rebuild", "registry"],
    ["checkpoint"],
    ["keys", "rotate"],
    ["serve", "--no-projector", "--no-runner"],
]


def _pg_engine() -> sa.Engine:
    return sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))


def _tables(settings: Settings) -> list[str]:
    """Every table of the ledger's database (SQLite) or schema (PostgreSQL)."""
    if settings.is_postgres:
        engine = _pg_engine()
        try:
            return sa.inspect(engine).get_table_names(schema=settings.database_schema)
        finally:
            engine.dispose()
    path = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    if not path.exists():
        return []
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.fixture
def fresh(settings: Settings) -> Settings:
    """A ledger's place before its first ``mlledger migrate``: an empty data directory and, on PostgreSQL,
    an empty schema (as a fresh volume and a schema made by a database administrator are)."""
    settings.data_dir.mkdir(parents=True)
    if settings.is_postgres:
        engine = _pg_engine()
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{settings.database_schema}"'))
        engine.dispose()
    return settings


@pytest.mark.parametrize("command", COMMANDS_ON_AN_EXISTING_LEDGER, ids=" ".join)
def test_a_command_without_a_ledger_says_how_to_create_one_and_creates_nothing(
    fresh: Settings, command: list[str], tmp_path: Path
) -> None:
    result = run_cli(fresh, *(arg.format(tmp=tmp_path) for arg in command), timeout=120)

    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"mlledger: error: no ledger at {_where(fresh)}; create one with 'mlledger migrate'"
    ]
    assert list(fresh.data_dir.iterdir()) == []
    assert _tables(fresh) == []
    assert not (tmp_path / "bundle.zip").exists()


def test_a_missing_data_directory_is_not_created(settings: Settings) -> None:
    result = run_cli(settings, "verify", timeout=120)

    assert result.returncode != 0
    assert "no ledger at" in result.stderr and "mlledger migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not settings.data_dir.exists()


def test_after_migrate_the_same_commands_open_the_ledger(settings: Settings) -> None:
    assert run_cli(settings, "migrate", timeout=120).returncode == 0

    projected = run_cli(settings, "project", timeout=120)
    verified = run_cli(settings, "verify", "--workers", "1", timeout=120)

    assert projected.returncode == 0, projected.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: ")


def test_project_only_names_the_read_models_it_knows(settings: Settings) -> None:
    assert run_cli(settings, "migrate", timeout=120).returncode == 0

    wrong = run_cli(settings, "project", "--only", "registri", timeout=120)
    one = run_cli(settings, "project", "--only", "transparency_log", "--only", "registry", timeout=120)

    assert wrong.returncode != 0
    assert "no read model named registri; known: transparency_log, registry" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("projected ")


def test_a_command_on_a_ledger_whose_key_is_missing_refuses_and_leaves_no_new_key_behind(
    settings: Settings, tmp_path: Path
) -> None:
    assert run_cli(settings, "migrate", timeout=120).returncode == 0
    settings.keys_dir.rename(tmp_path / "keys-elsewhere")  # the volume with the key was not mounted

    result = run_cli(settings, "checkpoint", timeout=120)

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "is not a key of this ledger" in result.stderr
    assert not settings.keys_dir.exists()  # the key made on the way was this ledger's by no means: gone


def _where(settings: Settings) -> str:
    if settings.is_postgres:
        url = urlsplit(PG_URL)
        return f"PostgreSQL {url.hostname}:{url.port or 5432}{url.path} (schema {settings.database_schema})"
    return str(settings.data_dir.resolve() / "ledger.sqlite3")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "a runner talks to the ledger over HTTP: give --ledger-url"),
        (["--ledger-url", "http://127.0.0.1:9"], "MLLEDGER_RUNNER_API_KEY is not set"),
    ],
)
def test_a_runner_needs_the_ledger_url_and_a_runner_key_not_the_ledger_itself(
    fresh: Settings, args: list[str], says: str
) -> None:
    result = run_cli(fresh, "runner", *args, timeout=120)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert says in result.stderr
    assert list(fresh.data_dir.iterdir()) == []


def test_the_revision_is_read_as_alembic_reads_it_without_importing_it(settings: Settings) -> None:
    from alembic.runtime.migration import MigrationContext

    from service.store.persistence import create_engine
    from service.store.revision import current_revision, require_ledger

    assert current_revision(settings) is None
    assert run_cli(settings, "migrate", timeout=120).returncode == 0
    engine = create_engine(settings)
    try:
        with engine.connect() as conn:
            expected = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    assert expected is not None
    assert current_revision(settings) == require_ledger(settings) == expected


def test_verify_runs_without_the_service_wiring_or_the_migrations(settings: Settings) -> None:
    """``mlledger verify`` loads only what checking the ledger needs (not the read models' wiring, not
    Alembic): its start-up is part of every verification's time."""
    import subprocess
    import sys

    from support.ledger import REPO, settings_env

    assert run_cli(settings, "migrate", timeout=120).returncode == 0
    probe = (
        "import atexit, sys\n"
        "unwanted = ('alembic', 'service.bootstrap', 'projections.manifests')\n"
        "atexit.register(lambda: print('loaded:', sorted(m for m in unwanted if m in sys.modules), file=sys.stderr))\n"
        "sys.argv = ['mlledger', 'verify', '--workers', '1']\n"
        "from service.cli import main\n"
        "main()\n"
    )
    verified = subprocess.run(
        [sys.executable, "-c", probe],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: ")
    assert "loaded: []" in verified.stderr
