"""The one place that wires settings, keys, the ledger, the database engine and
the projections together (for the API, the CLI and the tests)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

import migrations
from domain.keys import Signer
from projections.base import Projection, ProjectionRunner
from projections.transparency_log import TransparencyLog
from service import keystore
from service.ledger import KeyNotInKeyring, Ledger
from service.persistence import create_engine
from service.settings import Settings

log = logging.getLogger(__name__)


def all_projections() -> list[Projection]:
    """Every read model the service keeps current."""
    return [TransparencyLog()]


def run_migrations(settings: Settings) -> None:
    """Bring the read-model tables to the newest migration."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["settings"] = settings
    command.upgrade(config, "head")


def pending_key_path(settings: Settings) -> Path:
    """Where a rotation keeps the new key until its event is recorded."""
    return keystore.ledger_key_path(settings.keys_dir, settings.key_path).with_suffix(".next.pem")


def _finish_interrupted_rotation(settings: Settings, ledger: Ledger) -> Signer:
    """A rotation was recorded but the process died before the new key became current."""
    pending = pending_key_path(settings)
    keyring = ledger.keyring()
    if keyring is None or not pending.exists():
        raise KeyNotInKeyring(
            "the configured ledger key is not the current key of this ledger; "
            "use the current key file"
        )
    signer, _ = keystore.load_or_create(pending.parent, pending)
    if signer.key_id != keyring.current_key_id:
        raise KeyNotInKeyring(
            f"neither the key file nor the pending rotation key is the ledger's current key "
            f"({keyring.current_key_id})"
        )
    keystore.replace_current(settings.keys_dir, settings.key_path, signer)
    pending.unlink()
    ledger.close()
    log.warning("finished an interrupted key rotation: now signing with %s", signer.key_id)
    return signer


@dataclass
class Services:
    """Everything a process of the service needs, opened once."""

    settings: Settings
    signer: Signer
    ledger: Ledger
    engine: Engine
    writer_engine: Engine
    runner: ProjectionRunner
    key_created: bool = False
    projections: list[Projection] = field(default_factory=list)

    def close(self) -> None:
        """Release database connections."""
        self.ledger.close()
        self.engine.dispose()
        self.writer_engine.dispose()


def open_services(settings: Settings, *, migrate: bool = False) -> Services:
    """Open the ledger (creating its key and keyring on first start)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if migrate:
        run_migrations(settings)
    signer, created = keystore.load_or_create(settings.keys_dir, settings.key_path)
    if created:
        log.info("created ledger key %s", signer.key_id)
    ledger = Ledger(settings, signer)
    try:
        ledger.ensure_keyring()
    except KeyNotInKeyring:
        signer = _finish_interrupted_rotation(settings, ledger)
        ledger = Ledger(settings, signer)
        ledger.ensure_keyring()
    engine = create_engine(settings)
    writer_engine = create_engine(settings, immediate=True)
    projections = all_projections()
    runner = ProjectionRunner(
        writer_engine,
        lambda start, limit: ledger.recorder.select_notifications(start, limit),
        projections,
        batch_size=settings.projection_batch_size,
    )
    return Services(
        settings=settings,
        signer=signer,
        ledger=ledger,
        engine=engine,
        writer_engine=writer_engine,
        runner=runner,
        key_created=created,
        projections=projections,
    )
