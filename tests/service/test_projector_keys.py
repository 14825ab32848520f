"""A projector of the read models holds no key: ``mlledger project --only`` without the transparency log
neither reads nor creates the ledger key (nor the keys directory) and still projects to the log's end;
the Merkle log's projector signs checkpoints and so still needs the key (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ledger import run_cli

from projections.transparency_log import TransparencyLog
from service.bootstrap import all_projections, open_projector, open_services
from service.ops.projector import ProjectorThread
from service.ops.workload import append_events
from service.settings import Settings

READ_MODELS = [p.name for p in all_projections() if p.name != TransparencyLog.name]


@dataclass(frozen=True)
class Recorded:
    """A migrated ledger with events none of its read models has applied yet."""

    settings: Settings
    head: int
    """The newest notification id."""


@pytest.fixture
def recorded(settings: Settings) -> Iterator[Recorded]:
    services = open_services(settings, migrate=True)
    try:
        append_events(services.ledger, 300, batch=100)
        head = services.ledger.position()
    finally:
        services.close()
    yield Recorded(settings, head)


def _only(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--only", name)]


def _positions(settings: Settings) -> dict[str, int]:
    projector = open_projector(settings)
    try:
        return projector.runner.positions()
    finally:
        projector.close()


def test_the_read_models_are_projected_to_the_end_where_there_is_no_keys_directory(
    recorded: Recorded, tmp_path: Path
) -> None:
    keys_dir = recorded.settings.keys_dir
    shutil.move(keys_dir, tmp_path / "keys-elsewhere")

    result = run_cli(recorded.settings, "project", *_only(READ_MODELS), timeout=180)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("projected ")
    assert not keys_dir.exists()
    assert list(recorded.settings.data_dir.rglob("*.pem")) == []
    positions = _positions(recorded.settings)
    assert {name: positions[name] for name in READ_MODELS} == dict.fromkeys(READ_MODELS, recorded.head)
    assert positions[TransparencyLog.name] == 0


def test_the_read_models_are_projected_without_reading_the_key_that_the_transparency_log_needs(
    recorded: Recorded,
) -> None:
    key = recorded.settings.keys_dir / "ledger.pem"
    key.write_bytes(b"not a key\n")  # whoever reads it fails

    models = run_cli(recorded.settings, "project", *_only(READ_MODELS), timeout=180)
    merkle_log = run_cli(recorded.settings, "project", "--only", TransparencyLog.name, timeout=180)

    assert models.returncode == 0, models.stderr
    assert merkle_log.returncode == 2
    assert "mlledger: error: not a PEM private key" in merkle_log.stderr
    assert key.read_bytes() == b"not a key\n"
    positions = _positions(recorded.settings)
    assert {name: positions[name] for name in READ_MODELS} == dict.fromkeys(READ_MODELS, recorded.head)
    assert positions[TransparencyLog.name] == 0


def test_the_transparency_log_projector_signs_a_checkpoint_with_the_ledger_key(recorded: Recorded) -> None:
    result = run_cli(recorded.settings, "project", "--only", TransparencyLog.name, timeout=180)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"projected {recorded.head} events",
        f"checkpoint published at tree size {recorded.head}",
    ]


def test_a_keyless_projector_follows_the_read_models_to_the_end(recorded: Recorded, tmp_path: Path) -> None:
    keys_dir = recorded.settings.keys_dir
    shutil.move(keys_dir, tmp_path / "keys-elsewhere")
    projector = open_projector(recorded.settings)
    following = ProjectorThread(projector, only=READ_MODELS)
    try:
        following.start()
        deadline = time.monotonic() + 120
        while any(projector.runner.position(name) < recorded.head for name in READ_MODELS):
            assert time.monotonic() < deadline, projector.runner.positions()
            time.sleep(0.05)
    finally:
        following.stop()
        following.join(30)
        projector.close()

    assert not keys_dir.exists()


def test_a_keyless_projector_cannot_take_the_transparency_log(recorded: Recorded) -> None:
    projector = open_projector(recorded.settings)
    try:
        with pytest.raises(TypeError, match="checkpoints are signed"):
            ProjectorThread(projector, only=[TransparencyLog.name, "registry"])
        with pytest.raises(TypeError, match="checkpoints are signed"):
            ProjectorThread(projector)
    finally:
        projector.close()
