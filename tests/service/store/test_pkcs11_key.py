"""The ledger key in a PKCS#11 token (SoftHSM2): URIs, signing in the token, and a ledger that
serves, predicts, publishes checkpoints and verifies with it, on SQLite and the real PostgreSQL.

The token is made once per test session (tests/support/softhsm.py) in a temporary
directory, with Ed25519 keys generated in it by pkcs11-tool.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, REPO, drop_schema, make_settings, require_postgres, run_cli, settings_env
from support.serving_world import MODEL, credit_rows, deploy_world, features_of
from support.softhsm import MODULE, PIN, TOKEN, SoftHsm, softhsm

from domain.integrity.checkpoint import verifier_key, verify_checkpoint
from domain.integrity.cosignature import cosigner_vkey
from domain.integrity.keys import Signer, load_public_key_pem, raw_public_key, verify_signature
from service.app import create_app
from service.bootstrap import open_services
from service.common.pkcs11 import TokenKey, TokenKeyError, open_token_key, parse_pkcs11_uri
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.ops.witnessing import submit_to_witnesses
from service.ops.workload import append_events
from service.settings import Settings
from service.store import keystore


@pytest.fixture(scope="module")
def hsm() -> SoftHsm:
    return softhsm()


def token_public_key(label: str) -> bytes:
    """The raw public key as pkcs11-tool reads it out of the token (not through this service's code)."""
    return softhsm().public_key(label)


def private_key_files(data_dir: Path) -> list[Path]:
    """Every file under the data directory that holds a private key."""
    return [p for p in data_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]


# -- URIs ----------------------------------------------------------------------


def test_a_uri_names_the_token_the_object_and_how_to_log_in() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=My%20HSM;object=ledger;id=%01?pin-value=12%2634&module-path=/opt/p11.so")

    assert uri.get("token") == "My HSM" and uri.get("object") == "ledger" and uri.get("id") == "\x01"
    assert uri.pin() == "12&34"
    assert uri.module_path == "/opt/p11.so"
    assert "12" not in uri.redacted() and "pin-value=***" in uri.redacted()
    assert parse_pkcs11_uri(uri.text()) == uri


def test_the_pin_may_come_from_a_file(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("s3cret\n")

    assert parse_pkcs11_uri(f"pkcs11:object=k?pin-source=file:{pin}").pin() == "s3cret"
    assert parse_pkcs11_uri(f"pkcs11:object=k?pin-source=file://{pin}").pin() == "s3cret"
    assert parse_pkcs11_uri(f"pkcs11:object=k?pin-source={pin}").pin() == "s3cret"
    assert parse_pkcs11_uri(f"pkcs11:object=k?pin-source={pin}").without_pin_value().has_pin


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("file:/keys/ledger.pem", "starts with 'pkcs11:'"),
        ("pkcs11:token=t", "names no key"),
        ("pkcs11:tokne=t;object=k", "unknown path attribute 'tokne'"),
        ("pkcs11:object=k;object=j", "repeats"),
        ("pkcs11:object=k?pin=1", "unknown query attribute 'pin'"),
        ("pkcs11:object=k?pin-value=1&pin-source=/p", "both pin-value and pin-source"),
        ("pkcs11:object=k;type=public", "the signing key is private"),
        ("pkcs11:object=a b", "percent-encoded"),
    ],
)
def test_malformed_uris_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(TokenKeyError, match=says):
        parse_pkcs11_uri(text)


def test_a_uri_without_a_pin_says_how_to_give_one() -> None:
    with pytest.raises(TokenKeyError, match=r"add pin-value=\.\.\. or pin-source=file:"):
        parse_pkcs11_uri("pkcs11:token=t;object=k").pin()


# -- the key in the token ------------------------------------------------------


def test_the_token_signs_and_the_private_key_stays_there(hsm: SoftHsm) -> None:
    key = open_token_key(hsm.uri("ledger"), MODULE)

    signature = key.sign(b"an event hash")

    assert verify_signature(key.public_key, signature, b"an event hash")
    assert raw_public_key(key.public_key) == token_public_key("ledger")
    assert not hasattr(key, "private_key")
    assert key.parallel is False
    assert PIN not in key.source


def test_token_signatures_are_the_same_ed25519_signatures_as_a_file_keys(hsm: SoftHsm) -> None:
    """Checkpoints signed in the token verify with the domain's own signed-note check."""
    from domain.integrity.checkpoint import Checkpoint, sign_checkpoint

    key = open_token_key(hsm.uri("ledger", pin="source"), MODULE)
    note = sign_checkpoint(Checkpoint("example.org/log", 3, b"\x01" * 32), "example.org/log", key.note_key)

    assert verify_checkpoint(note, "example.org/log", key.public_key).tree_size == 3


def test_a_missing_object_or_token_is_named(hsm: SoftHsm) -> None:
    with pytest.raises(TokenKeyError, match="no such private key"):
        open_token_key(f"pkcs11:token={TOKEN};object=nothing?pin-value={PIN}", MODULE)
    with pytest.raises(TokenKeyError, match="no such token"):
        open_token_key(f"pkcs11:token=elsewhere;object=ledger?pin-value={PIN}", MODULE)
    with pytest.raises(TokenKeyError, match=r"cannot load the PKCS#11 module /nowhere/p11\.so"):
        open_token_key(f"pkcs11:token={TOKEN};object=ledger?pin-value={PIN}&module-path=/nowhere/p11.so", MODULE)


def test_a_wrong_pin_is_refused(hsm: SoftHsm, tmp_path: Path) -> None:
    """In a process of its own: this one is logged in to the token already."""
    settings = make_settings("sqlite", tmp_path / "data")
    env_uri = f"pkcs11:token={TOKEN};object=ledger?pin-value=0000"
    done = _run(settings, "keys", "show", key_uri=env_uri)

    assert done.returncode == 2
    assert "the token refused the PIN" in done.stderr
    assert "0000" not in done.stderr
    assert private_key_files(settings.data_dir) == []


# -- a ledger whose key is in the token ------------------------------------------


@pytest.fixture
def token_settings(hsm: SoftHsm, backend: str, tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(backend, tmp_path / "data", key_uri=hsm.uri("ledger"), pkcs11_module=MODULE)
    yield settings
    if backend == "postgres":
        drop_schema(settings.database_schema)


def test_the_ledger_signs_with_the_token_key_and_writes_no_key_file(token_settings: Settings) -> None:
    services = open_services(token_settings, migrate=True)
    try:
        append_events(services.ledger, 30, batch=10)
        services.runner.catch_up()
        checkpoint = publish_checkpoint_if_due(services, force=True)
        keyring = services.ledger.keyring()
    finally:
        services.close()

    assert isinstance(services.signer, TokenKey)
    assert keyring is not None and keyring.current_key_id == services.signer.key_id
    assert raw_public_key(load_public_key_pem(keyring.keys[services.signer.key_id])) == token_public_key("ledger")
    assert checkpoint is not None and checkpoint.key_id == services.signer.key_id
    assert private_key_files(token_settings.data_dir) == []
    assert not (token_settings.keys_dir / keystore.LEDGER_KEY_FILE).exists()
    assert (token_settings.keys_dir / "public" / f"{services.signer.key_id}.pem").exists()
    report = verify_ledger(token_settings, [token_public_key("ledger")], workers=1)
    assert report.ok, report.first()
    assert report.checkpoints >= 1


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The API over a ledger keyed in the token, a model trained, approved and deployed through it."""
    hsm = softhsm()
    if request.param == "postgres":
        require_postgres()
    settings = make_settings(
        request.param, tmp_path_factory.mktemp("hsm-serving") / "data", key_uri=hsm.uri("ledger", pin="source")
    )
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_workers=False, services=services)) as http:
            world = deploy_world(http, services, seeds=[1])
            yield settings, services, http, world
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)


@pytest.mark.slow
def test_serve_predict_checkpoint_and_verify_with_the_key_in_the_token(served: tuple) -> None:
    settings, services, http, world = served
    pia = world.world.people["pia"].client
    rows = credit_rows(20, seed=42)

    single = pia.predict(MODEL, features_of(rows[0]), request_id="hsm-1")
    batch = pia.predict_batch(MODEL, [{"input": features_of(r)} for r in rows[1:]])
    services.runner.catch_up()
    published = publish_checkpoint_if_due(services, force=True)
    keys = http.get("/v1/ledger/keys").json()
    latest = http.get("/v1/ledger/checkpoint").json()

    assert single["version"] == world.versions[0] and len(batch["predictions"]) == 19
    assert published is not None
    assert [k["key_id"] for k in keys] == [services.signer.key_id]
    assert raw_public_key(load_public_key_pem(keys[0]["public_key_pem"])) == token_public_key("ledger")
    note_key = load_public_key_pem(keys[0]["public_key_pem"])
    assert verify_checkpoint(latest["note"], settings.log_origin, note_key).tree_size == published.tree_size
    event = http.get(f"/v1/ledger/events/{batch['position']}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert event.status_code == 200 and event.json()["key_id"] == services.signer.key_id
    report = verify_ledger(settings, [token_public_key("ledger")], workers=1)
    assert report.ok, report.first()
    assert private_key_files(settings.data_dir) == []


# -- rotation ------------------------------------------------------------------


def test_a_file_keyed_ledger_moves_into_the_token_by_rotation(hsm: SoftHsm, tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    assert run_cli(settings, "migrate").returncode == 0
    file_key, _ = keystore.load_or_create(settings.keys_dir)

    moved = _run(settings, "keys", "rotate", "--to", hsm.uri("ledger-next", pin="none"), key_uri=hsm.uri("ledger"))

    assert moved.returncode == 2 and "is not a key of this ledger" in moved.stderr  # MLLEDGER_KEY_URI's key is not
    moved = _run(settings, "keys", "rotate", "--to", hsm.uri("ledger-next", pin="source"))
    assert moved.returncode == 0, moved.stderr
    assert "held in pkcs11:" in moved.stdout and "set MLLEDGER_KEY_URI" in moved.stdout
    assert private_key_files(settings.data_dir) == []
    stored = (settings.keys_dir / keystore.TOKEN_URI_FILE).read_text()
    assert "object=ledger-next" in stored and PIN not in stored

    # The next start finds the token key through the stored URI (its pin-source names the PIN file) ...
    shown = _run(settings, "keys", "show")
    assert shown.returncode == 0, shown.stderr
    assert "held in: pkcs11:" in shown.stdout
    # ... as it does when MLLEDGER_KEY_URI names it, and verify passes over both keys' windows.
    assert _run(settings, "checkpoint", key_uri=hsm.uri("ledger-next")).returncode == 0
    verified = _run(settings, "verify", key_uri=hsm.uri("ledger-next"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "with 2 ledger key(s)" in verified.stdout
    assert isinstance(file_key, Signer)


def test_a_token_key_is_not_rotated_out_into_a_key_file(hsm: SoftHsm, tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data", key_uri=hsm.uri("ledger"), pkcs11_module=MODULE)
    open_services(settings, migrate=True).close()

    refused = _run(settings, "keys", "rotate", key_uri=hsm.uri("ledger"))

    assert refused.returncode == 2
    assert "held in a PKCS#11 token" in refused.stderr and "--to pkcs11:" in refused.stderr
    assert private_key_files(settings.data_dir) == []


def test_a_token_key_rotates_to_another_object_and_running_ledgers_follow(hsm: SoftHsm, tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data", key_uri=hsm.uri("ledger"), pkcs11_module=MODULE)
    services = open_services(settings, migrate=True)
    try:
        append_events(services.ledger, 5, batch=5)
        old = services.ledger.signer.key_id

        rotated = _run(settings, "keys", "rotate", "--to", hsm.uri("ledger-next", pin="none"), key_uri=hsm.uri())
        append_events(services.ledger, 5, batch=5)  # this process takes the new key, PIN from its own URI

        assert rotated.returncode == 0, rotated.stderr
        assert services.ledger.signer.key_id != old
        assert raw_public_key(services.ledger.signer.public_key) == token_public_key("ledger-next")
    finally:
        services.close()
    # A restart with the old URI still configured signs with the current key, saying so.
    again = open_services(settings)
    try:
        assert raw_public_key(again.signer.public_key) == token_public_key("ledger-next")
    finally:
        again.close()
    assert verify_ledger(settings, [token_public_key("ledger")], workers=1).ok


def _run(settings: Settings, *args: str, key_uri: str | None = None) -> subprocess.CompletedProcess[str]:
    """``mlledger ARGS`` in a process of its own, with the key in the token when ``key_uri`` is given."""
    env = settings_env(settings)
    if key_uri is not None:
        env["MLLEDGER_KEY_URI"] = key_uri
    env["MLLEDGER_PKCS11_MODULE"] = MODULE
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- a witness whose key is in the token -------------------------------------------


def test_a_witness_cosigns_with_its_key_in_the_token(hsm: SoftHsm, tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "data")
    signer, _ = keystore.load_or_create(settings.keys_dir)
    log_vkey = verifier_key(settings.log_origin, raw_public_key(signer.public_key))
    command = [sys.executable, "-m", "service", "witness", "serve", "--state", str(tmp_path / "witness")]
    command += ["--name", "witness.test/hsm", "--port", "0", "--log", log_vkey, "--key-uri", hsm.uri("witness-a")]
    witness = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert witness.stdout is not None
        vkey = witness.stdout.readline().removeprefix("witness ").strip()
        url = witness.stdout.readline().removeprefix("listening on ").strip()
        assert url.startswith("http://"), witness.stderr.read() if witness.stderr else ""
        witnessed = Settings(**{**settings.model_dump(), "witnesses": f"w={url}={vkey}", "witness_policy": "1"})
        services = open_services(witnessed, migrate=True)
        try:
            append_events(services.ledger, 10, batch=10)
            services.runner.catch_up()
            assert publish_checkpoint_if_due(services, force=True) is not None
            cosigned_by = submit_to_witnesses(services)
        finally:
            services.close()
    finally:
        witness.terminate()
        witness.wait(timeout=10)

    assert vkey == cosigner_vkey("witness.test/hsm", token_public_key("witness-a"))
    assert cosigned_by == ["w"]  # the ledger checked the cosignature against that key before storing it
    assert sorted(p.name for p in (tmp_path / "witness").iterdir()) == ["state.json", "witness.name"]
