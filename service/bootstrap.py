"""The one place that wires settings, keys, the ledger, the database engine and
the projections together (for the API, the CLI and the tests)."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alembic import command
from alembic.config import Config
from eventsourcing.persistence import InfrastructureFactory, TrackingRecorder
from eventsourcing.utils import Environment
from sqlalchemy.engine import Engine

import migrations
from domain.errors import LedgerError
from domain.integrity.keys import SigningKey
from projections.audit_trail import AuditTrail
from projections.base import Projection, ProjectionRunner, SelectNotifications
from projections.manifests import Manifests
from projections.predictions import Predictions
from projections.registry import Registry
from projections.transparency_log import TransparencyLog
from service.application.auth import bootstrap_admin
from service.application.ledger import KeyNotInKeyring, Ledger
from service.application.runner_desk import RunnerDesk
from service.settings import Settings
from service.store import keystore
from service.store.blobs import BlobStore
from service.store.persistence import create_engine, create_inspecting_engine, eventsourcing_env, sqlite_path

log = logging.getLogger(__name__)


def all_projections() -> list[Projection]:
    """Every read model the service keeps current."""
    return [TransparencyLog(), Registry(), AuditTrail(), Manifests(), Predictions()]


def run_migrations(settings: Settings) -> None:
    """Bring the read-model tables to the newest migration."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["settings"] = settings
    command.upgrade(config, "head")


class NotMigrated(LedgerError):
    """The database's tables are older than this version of the service."""

    title = "Database not migrated"


class NoLedger(NotMigrated):
    """The data directory or database holds no ledger yet (first run): nothing to open, verify or export."""

    title = "No ledger"


def ledger_location(settings: Settings) -> str:
    """Where the ledger lives, in words for a message (never the database password)."""
    path = sqlite_path(settings)
    if path is not None:
        return str(path)
    parts = urlsplit(settings.resolved_database_url)
    database = parts.path.lstrip("/") or "postgres"
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return f"PostgreSQL {host}/{database} (schema {settings.database_schema})"


def _current_revision(settings: Settings) -> str | None:
    """The database's migration revision, or None when it has no ledger; creates nothing."""
    from alembic.runtime.migration import MigrationContext

    engine = create_inspecting_engine(settings)
    if engine is None:
        return None
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def require_ledger(settings: Settings) -> str:
    """The ledger's migration revision; refuse a data directory or database that holds no ledger yet.

    Commands that open an existing ledger call this first; without it, opening
    would create a key, a keyring and an event table beside missing read-model
    tables, and then fail on them. Guarded by tests/service/test_cli_first_run.py.
    """
    current = _current_revision(settings)
    if current is None:
        raise NoLedger(f"no ledger at {ledger_location(settings)}; create one with 'mlledger migrate'")
    return current


def check_migrated(settings: Settings) -> None:
    """Refuse to start on a database that holds no ledger or is not at the newest migration."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    head = ScriptDirectory.from_config(config).get_current_head()
    current = require_ledger(settings)
    if current != head:
        raise NotMigrated(
            f"the database has revision {current}, this service needs revision {head}: run 'mlledger migrate' first"
        )


def pending_key_path(settings: Settings) -> Path:
    """Where a rotation keeps the new key until its event is recorded."""
    return keystore.pending_key_path(settings.keys_dir, settings.key_path)


def _finish_interrupted_rotation(settings: Settings, ledger: Ledger) -> SigningKey:
    """The configured key is not the ledger's current key: a rotation was recorded by a process that
    died before the new key became current, or by another process (a rotation to a token key).

    The current key is looked for among the key files and the token keys a rotation named
    (:func:`keystore.find_key`); found, it becomes current on disk, else the start is refused.
    """
    keyring = ledger.keyring()
    configured = ledger.signer
    if keyring is None:
        raise KeyNotInKeyring("the ledger has no keyring")
    if configured.key_id not in keyring.keys:
        raise KeyNotInKeyring(
            f"the configured ledger key {configured.key_id} ({configured.source}) is not a key of this ledger "
            f"(its current key is {keyring.current_key_id}); a new key joins by 'mlledger keys rotate'"
        )
    found = keystore.find_key(settings, keyring.current_key_id)
    if found is None:
        raise KeyNotInKeyring(
            f"the configured ledger key {configured.key_id} ({configured.source}) is not the ledger's current key "
            f"{keyring.current_key_id}, and neither a key file nor a token key here is it: "
            "configure the current key (MLLEDGER_KEY_URI for a key in a token)"
        )
    where, signer = found
    keystore.make_current(settings, where, signer)
    ledger.close()
    if keystore.configured_uri(settings) is not None:
        log.warning(
            "MLLEDGER_KEY_URI names retired ledger key %s; signing with the current key %s (%s): update it",
            configured.key_id,
            signer.key_id,
            signer.source,
        )
    else:
        log.warning("finished an interrupted key rotation: now signing with %s", signer.key_id)
    return signer


@dataclass
class Services:
    """Everything a process of the service needs, opened once."""

    settings: Settings
    signer: SigningKey
    ledger: Ledger
    engine: Engine
    writer_engine: Engine
    runner: ProjectionRunner
    blobs: BlobStore
    key_created: bool = False
    admin_api_key: str | None = None
    """The first admin's API key when it was generated by this start (print it once)."""
    projections: list[Projection] = field(default_factory=list)

    @functools.cached_property
    def desk(self) -> RunnerDesk:
        """The service's side of the runner protocol (run tokens, work orders, verified results)."""
        return RunnerDesk(
            self.ledger,
            self.blobs,
            self.writer_engine,
            self.settings.keys_dir,
            self.settings.heartbeat_timeout_seconds,
            read_engine=self.engine,
        )

    def close(self) -> None:
        """Release database connections (and the projection runner's threads)."""
        self.runner.close()
        self.ledger.close()
        self.engine.dispose()
        self.writer_engine.dispose()


def _projector_select(recorder: Any) -> SelectNotifications:
    """How the projector reads the log: the PostgreSQL recorder's plain-tuple query where there is one."""
    select: SelectNotifications | None = getattr(recorder, "select_projected", None)
    if select is not None:
        return select
    return lambda start, limit: recorder.select_notifications(start, limit)


def _projection_runner(settings: Settings, writer_engine: Engine, recorder: Any) -> ProjectionRunner:
    """The runner that feeds every read model from ``recorder``'s log, writing with ``writer_engine``."""
    return ProjectionRunner(
        writer_engine,
        _projector_select(recorder),
        all_projections(),
        batch_size=settings.projection_batch_size,
    )


def open_services(settings: Settings, *, migrate: bool = False) -> Services:
    """Open the ledger (creating its key and keyring on first start)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if migrate:
        run_migrations(settings)
    signer, created = keystore.open_ledger_key(settings)
    if created:
        log.info("created ledger key %s", signer.key_id)
    ledger = Ledger(settings, signer)
    try:
        ledger.ensure_keyring()
    except KeyNotInKeyring:
        try:
            signer = _finish_interrupted_rotation(settings, ledger)
        except KeyNotInKeyring:
            ledger.close()
            if created:  # a key made just now for a ledger that has its own: leave no stray key behind
                keystore.remove_created(settings.keys_dir, signer)
            raise
        ledger = Ledger(settings, signer)
        ledger.ensure_keyring()
    admin_api_key = bootstrap_admin(ledger, settings.admin_api_key)
    engine = create_engine(settings)
    writer_engine = create_engine(settings, immediate=True)
    runner = _projection_runner(settings, writer_engine, ledger.recorder)
    return Services(
        settings=settings,
        signer=signer,
        ledger=ledger,
        engine=engine,
        writer_engine=writer_engine,
        runner=runner,
        blobs=BlobStore(settings.blobs_dir),
        key_created=created,
        admin_api_key=admin_api_key,
        projections=list(runner.projections.values()),
    )


@dataclass
class ReadModelProjector:
    """What a process that only keeps read models current needs: the event log it reads, the projection
    runner and the engine the runner writes with.

    It holds no key and no blob store: applying events to read models signs
    nothing, so such a process never reads (nor creates) the ledger key or the
    subject KEK (DESIGN.md section 10). The Merkle log's checkpoints are signed:
    the process that publishes them opens :func:`open_services`.
    """

    settings: Settings
    writer_engine: Engine
    runner: ProjectionRunner
    event_log: InfrastructureFactory[TrackingRecorder]
    """The event store's infrastructure, opened for reading the notification log (no mapper, no signer)."""

    def close(self) -> None:
        """Release database connections (and the projection runner's threads)."""
        self.runner.close()
        self.event_log.close()
        self.writer_engine.dispose()


def open_projector(settings: Settings) -> ReadModelProjector:
    """Open the event log and the read models for projecting, with no key: the key file, the token, the
    subject KEK and the keys directory are neither read nor created, and the data directory is left as it is.

    The event store is reached as the ledger application reaches it (its name, so
    its table, and the same persistence settings), without the sealing mapper that
    needs the signer.
    """
    event_log: InfrastructureFactory[TrackingRecorder] = InfrastructureFactory.construct(
        Environment(Ledger.name, {**os.environ, **eventsourcing_env(settings)})
    )
    writer_engine = create_engine(settings, immediate=True)
    runner = _projection_runner(settings, writer_engine, event_log.application_recorder())
    return ReadModelProjector(settings, writer_engine, runner, event_log)
