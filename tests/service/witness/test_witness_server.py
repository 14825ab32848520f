"""``mlledger witness serve`` as a real process: the C2SP tlog-witness statuses, the
cosignature it returns, and state that survives SIGKILL and refusals."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.integrity import merkle
from domain.integrity.checkpoint import Checkpoint, parse_signed_note, sign_checkpoint, verifier_key
from domain.integrity.cosignature import AddCheckpointRequest, parse_cosigner_vkey, valid_cosigners
from domain.integrity.keys import raw_public_key
from tests.support.witnesses import WitnessProcess

ORIGIN = "example.com/ledger"
LOG_KEY = Ed25519PrivateKey.generate()
LOG_VKEY = verifier_key(ORIGIN, raw_public_key(LOG_KEY.public_key()))


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _body(old: int, leaves: list[bytes], origin: str = ORIGIN) -> bytes:
    proof = tuple(merkle.consistency_proof(leaves, old)) if 0 < old < len(leaves) else ()
    note = sign_checkpoint(Checkpoint(origin, len(leaves), merkle.root_hash(leaves)), origin, LOG_KEY)
    return AddCheckpointRequest(old, proof, note).body().encode()


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[WitnessProcess]:
    process = WitnessProcess(tmp_path / "witness", [f"{ORIGIN}={LOG_VKEY}"]).start()
    yield process
    process.kill()


def _add(witness: WitnessProcess, body: bytes) -> httpx.Response:
    return httpx.post(f"{witness.url}/add-checkpoint", content=body, timeout=10)


def test_the_witness_cosigns_a_consistent_checkpoint_with_its_key(witness: WitnessProcess) -> None:
    leaves = _leaves(7)

    response = _add(witness, _body(0, leaves))

    assert response.status_code == 200
    note = sign_checkpoint(Checkpoint(ORIGIN, 7, merkle.root_hash(leaves)), ORIGIN, LOG_KEY) + response.text
    assert set(valid_cosigners(note, [parse_cosigner_vkey(witness.vkey)])) == {"witness.test/w1"}
    assert _add(witness, _body(7, _leaves(12))).status_code == 200


def test_the_key_file_is_private(witness: WitnessProcess) -> None:
    assert (witness.state / "witness.key").stat().st_mode & 0o777 == 0o600


def test_a_stale_old_size_is_a_409_with_the_latest_size(witness: WitnessProcess) -> None:
    assert _add(witness, _body(0, _leaves(7))).status_code == 200

    response = _add(witness, _body(0, _leaves(9)))

    assert response.status_code == 409
    assert response.headers["content-type"] == "text/x.tlog.size"
    assert response.text == "7\n"


def test_a_sigkilled_witness_keeps_its_state(witness: WitnessProcess) -> None:
    assert _add(witness, _body(0, _leaves(7))).status_code == 200

    witness.kill()
    witness.start()

    assert _add(witness, _body(0, _leaves(9))).text == "7\n"
    assert _add(witness, _body(7, _leaves(9))).status_code == 200
    served = httpx.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint", timeout=10)
    assert served.text.split("\n")[1] == "9"
    assert len(parse_signed_note(served.text)[1]) == 2


def test_a_rewritten_history_signed_by_the_log_key_is_refused_and_the_state_untouched(
    witness: WitnessProcess,
) -> None:
    assert _add(witness, _body(0, _leaves(7))).status_code == 200
    state = (witness.state / "state.json").read_bytes()
    rewritten = _leaves(7, b"rewritten") + _leaves(5)

    inconsistent = _add(witness, _body(7, rewritten))
    same_size = _add(witness, _body(7, _leaves(7, b"rewritten")))
    from_scratch = _add(witness, _body(0, rewritten))

    assert (inconsistent.status_code, same_size.status_code, from_scratch.status_code) == (422, 422, 409)
    assert inconsistent.headers["content-type"] == "application/problem+json"
    assert (witness.state / "state.json").read_bytes() == state
    assert _add(witness, _body(7, _leaves(12))).status_code == 200


def test_an_unknown_origin_is_404_and_a_foreign_key_403(witness: WitnessProcess) -> None:
    other_key = Ed25519PrivateKey.generate()
    leaves = _leaves(3)
    foreign = sign_checkpoint(Checkpoint(ORIGIN, 3, merkle.root_hash(leaves)), ORIGIN, other_key)

    assert _add(witness, _body(0, leaves, origin="other.example/log")).status_code == 404
    assert _add(witness, AddCheckpointRequest(0, (), foreign).body().encode()).status_code == 403
    assert not (witness.state / "state.json").exists()


@pytest.mark.parametrize("body", [b"", b"old 1\n", b"garbage\n\nx\n", b"old 0\n\n" + b"\xff" * 10, b"old 5\n\n"])
def test_garbage_is_a_400_problem(witness: WitnessProcess, body: bytes) -> None:
    response = _add(witness, body)

    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_an_old_size_beyond_the_checkpoint_is_400(witness: WitnessProcess) -> None:
    assert _add(witness, _body(0, _leaves(3)).replace(b"old 0", b"old 4", 1)).status_code == 400


def test_a_witness_without_logs_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="at least one log"):
        WitnessProcess(tmp_path / "w", []).start()


def test_a_witness_refuses_another_name_for_its_key(tmp_path: Path) -> None:
    first = WitnessProcess(tmp_path / "w", [LOG_VKEY]).start()
    first.kill()

    with pytest.raises(RuntimeError, match="created for the name"):
        WitnessProcess(tmp_path / "w", [LOG_VKEY], name="witness.test/other").start()
