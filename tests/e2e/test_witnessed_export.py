"""An export bundle of a witnessed ledger carries the witness policy and cosigned checkpoints, and
``verify-bundle`` holds the latest checkpoint to the policy: a bundle whose checkpoint lacks the
quorum's cosignatures, or carries a forged one, fails naming the checkpoint."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from support.governance_world import make_world, train_and_register
from support.ledger import REPO, make_settings

from domain.integrity.checkpoint import NoteSignature, parse_signed_note, verifier_key
from domain.integrity.cosignature import cosigner_vkey
from domain.integrity.keys import raw_public_key
from domain.integrity.witness import CheckpointNotWitnessed
from service.app import create_app
from service.bootstrap import Services, open_services
from service.exports import verify_bundle as checker
from service.exports.bundle import export_bundle
from service.exports.scope import ExportRequest
from service.store import keystore
from tests.support.witnesses import WitnessProcess

MODEL = "credit-risk"
ACTOR = "user:admin"


@dataclass
class Witnessed:
    services: Services
    witnesses: list[WitnessProcess]
    bundle: Path


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[Witnessed]:
    """A ledger (SQLite) followed by two witnesses, policy 2 of 2, with a model exported."""
    data = tmp_path / "data"
    signer, _ = keystore.load_or_create(data / "keys")
    log_vkey = verifier_key("mlledger.local/ledger", raw_public_key(signer.public_key))
    witnesses = [WitnessProcess(tmp_path / f"w{i}", [log_vkey], name=f"witness.test/w{i}").start() for i in (1, 2)]
    listed = ",".join(f"w{i}={w.url}={w.vkey}" for i, w in enumerate(witnesses, start=1))
    settings = make_settings("sqlite", data, witnesses=listed, witness_policy="2")
    services = open_services(settings, migrate=True)
    try:
        with TestClient(create_app(settings, run_projector=False, services=services)) as http:
            train_and_register(make_world(http), "alice", MODEL)
        services.runner.catch_up()
        bundle = export_bundle(services, ExportRequest.of(MODEL), actor=ACTOR, destination=tmp_path / "b.zip").path
        yield Witnessed(services, witnesses, bundle)
    finally:
        services.close()
        for witness in witnesses:
            witness.kill()


def _policy_text(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as archive:
        return archive.read(checker.WITNESS_POLICY).decode()


def _latest(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as archive:
        sizes = [int(n.split("/")[1][:-4]) for n in archive.namelist() if n.startswith("checkpoints/")]
    return checker.checkpoint_name(max(sizes))


def _rewrite(source: Path, target: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, data if info.filename == name else old.read(info.filename))
    return target


def test_the_bundle_verifies_against_the_policy_you_give(witnessed: Witnessed, tmp_path: Path) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text(_policy_text(witnessed.bundle))

    result = subprocess.run(
        [sys.executable, "-m", "service", "verify-bundle", str(witnessed.bundle), "--witness-policy", str(policy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout
    assert "witnessed: the latest checkpoint meets the policy you gave" in result.stdout
    assert "cosigned by w1, w2" in result.stdout


def test_without_a_policy_of_yours_the_bundles_policy_is_used_and_said_to_be_unanchored(witnessed: Witnessed) -> None:
    summary = checker.verify_bundle(witnessed.bundle)

    assert "NOT anchored" in summary.witnessing


def test_a_checkpoint_stripped_of_its_cosignatures_fails_naming_it(witnessed: Witnessed, tmp_path: Path) -> None:
    name = _latest(witnessed.bundle)
    with zipfile.ZipFile(witnessed.bundle) as archive:
        note = archive.read(name).decode()
    body, signatures = parse_signed_note(note)
    stripped = body + "\n" + signatures[0].line()
    bundle = _rewrite(witnessed.bundle, tmp_path / "stripped.zip", name, stripped.encode())

    with pytest.raises(checker.BundleProblem, match=rf"{name}: lacks the cosignatures") as caught:
        checker.verify_bundle(bundle, witness_policy=_policy_text(witnessed.bundle))

    assert "cosigned by no witness" in str(caught.value)


def test_a_forged_cosignature_fails_naming_the_checkpoint(witnessed: Witnessed, tmp_path: Path) -> None:
    name = _latest(witnessed.bundle)
    with zipfile.ZipFile(witnessed.bundle) as archive:
        note = archive.read(name).decode()
    body, signatures = parse_signed_note(note)
    last = signatures[-1]
    forged = NoteSignature(last.key_name, last.key_hash, last.signature[:-1] + bytes([last.signature[-1] ^ 1]))
    text = body + "\n" + "".join(s.line() for s in signatures[:-1]) + forged.line()
    bundle = _rewrite(witnessed.bundle, tmp_path / "forged.zip", name, text.encode())

    with pytest.raises(checker.BundleProblem, match=rf"{name}: its cosignature by witness w\d .* does not verify"):
        checker.verify_bundle(bundle, witness_policy=_policy_text(witnessed.bundle))


def test_a_policy_needing_a_witness_that_did_not_cosign_fails(witnessed: Witnessed) -> None:
    stranger = cosigner_vkey("stranger.example/w3", raw_public_key(Ed25519PrivateKey.generate().public_key()))
    policy = _policy_text(witnessed.bundle).replace("quorum ledger-quorum\n", f"witness w3 {stranger}\nquorum w3\n")

    with pytest.raises(checker.BundleProblem, match=r"lacks the cosignatures the policy you gave requires \(quorum w3"):
        checker.verify_bundle(witnessed.bundle, witness_policy=policy)


def test_an_export_while_the_witnesses_are_down_is_refused(witnessed: Witnessed, tmp_path: Path) -> None:
    for witness in witnessed.witnesses:
        witness.kill()

    with pytest.raises(CheckpointNotWitnessed):
        export_bundle(witnessed.services, ExportRequest.of(MODEL), actor=ACTOR, destination=tmp_path / "x.zip")
