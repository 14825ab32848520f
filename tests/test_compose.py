"""compose.yaml keeps the keys where something signs: the API and the Merkle log's projector mount the
ledger volume (key, subject KEK, content-addressed files); the read-model projector gets only the database,
and the runner neither the volume nor the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types; the dev extras bring it (mlflow, schemathesis)

from projections.transparency_log import TransparencyLog
from service.bootstrap import all_projections

COMPOSE: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _volumes(service: str) -> list[str]:
    return [mount.split(":", 1)[0] for mount in SERVICES[service].get("volumes", [])]


def _only(service: str) -> list[str]:
    command: list[str] = SERVICES[service]["command"]
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--only"]


def test_only_the_migration_the_api_and_the_merkle_log_projector_mount_the_ledger_volume() -> None:
    assert {name for name in SERVICES if "ledger" in _volumes(name)} == {"migrate", "api", "projector"}


def test_the_read_model_projector_gets_the_database_url_and_no_volume() -> None:
    models = SERVICES["projector-models"]

    assert "volumes" not in models
    assert set(models["environment"]) == {"MLLEDGER_ENVIRONMENT", "MLLEDGER_DATABASE_URL"}
    assert TransparencyLog.name not in _only("projector-models")


def test_the_two_projectors_share_every_read_model_out_between_them() -> None:
    assert _only("projector") == [TransparencyLog.name]
    assert sorted(_only("projector") + _only("projector-models")) == sorted(p.name for p in all_projections())


def test_the_runner_mounts_no_ledger_volume_and_gets_no_database_url() -> None:
    runner = SERVICES["runner"]

    assert _volumes("runner") == ["runner"]
    assert not any(name.startswith("MLLEDGER_DATABASE") for name in runner["environment"])
