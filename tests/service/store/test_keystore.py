"""The ledger key on disk, ``mlledger keys show`` and the settings that refuse unsafe values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.ledger import PG_URL, make_settings, run_cli

from domain.integrity.keys import Signer, key_id, load_public_key_pem
from service.settings import Settings
from service.store import keystore
from service.store.keystore import KeyFileError, load_or_create


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_creates_a_key_file_only_its_owner_can_read(tmp_path: Path) -> None:
    keys_dir = tmp_path / "data" / "keys"

    _, created = load_or_create(keys_dir)

    assert created
    assert _mode(keys_dir / keystore.LEDGER_KEY_FILE) == 0o600
    assert _mode(keys_dir) == 0o700


def test_the_first_start_publishes_the_public_key_under_its_key_id(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"

    signer, _ = load_or_create(keys_dir)

    public = keys_dir / "public" / f"{signer.key_id}.pem"
    assert key_id(load_public_key_pem(public.read_text())) == signer.key_id


def test_a_later_start_loads_the_same_key(tmp_path: Path) -> None:
    first, _ = load_or_create(tmp_path / "keys")

    again, created = load_or_create(tmp_path / "keys")

    assert not created
    assert again.key_id == first.key_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660], ids=oct)
def test_a_key_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    load_or_create(tmp_path / "keys")
    path = tmp_path / "keys" / keystore.LEDGER_KEY_FILE
    path.chmod(mode)

    with pytest.raises(KeyFileError, match=r"chmod 600"):
        load_or_create(tmp_path / "keys")


def test_a_configured_key_path_that_does_not_exist_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "ledger.pem"

    with pytest.raises(KeyFileError, match="does not exist"):
        load_or_create(tmp_path / "keys", missing)

    assert not missing.exists()


def test_a_configured_key_path_is_loaded(tmp_path: Path) -> None:
    signer = Signer.generate()
    path = tmp_path / "vault" / "ledger.pem"
    keystore.write_private(path, signer)

    loaded, created = load_or_create(tmp_path / "keys", path)

    assert not created
    assert loaded.key_id == signer.key_id


def test_keys_show_prints_the_key_id_and_the_public_key(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    signer, _ = load_or_create(settings.keys_dir, settings.key_path)

    result = run_cli(settings, "keys", "show")

    assert result.returncode == 0, result.stderr
    assert f"key id: {signer.key_id}" in result.stdout
    pem = result.stdout[result.stdout.index("-----BEGIN PUBLIC KEY-----") :]
    assert key_id(load_public_key_pem(pem)) == signer.key_id


def test_keys_show_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    load_or_create(settings.keys_dir, settings.key_path)
    (settings.keys_dir / keystore.LEDGER_KEY_FILE).chmod(0o644)

    result = run_cli(settings, "keys", "show")

    assert result.returncode == 2
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("database_url", ["", "sqlite:///ledger.sqlite3"], ids=["default-sqlite", "explicit-sqlite"])
def test_production_without_postgresql_is_refused(tmp_path: Path, database_url: str) -> None:
    with pytest.raises(ValidationError, match="production needs"):
        Settings(environment="production", data_dir=tmp_path, database_url=database_url)


def test_production_on_postgresql_is_accepted(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path, database_url=PG_URL)

    assert settings.is_postgres


@pytest.mark.parametrize("schema", ["", "1ledger", "led-ger", "ledger;drop", 'led"ger', "led ger", "public.x"])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(tmp_path: Path, schema: str) -> None:
    with pytest.raises(ValidationError, match="database_schema"):
        Settings(data_dir=tmp_path, database_schema=schema)


def test_a_mixed_case_schema_name_is_refused(tmp_path: Path) -> None:
    # eventsourcing creates the schema quoted but looks its types up unquoted (folded to lower case).
    with pytest.raises(ValidationError, match="database_schema"):
        Settings(data_dir=tmp_path, database_schema="Ledger")
