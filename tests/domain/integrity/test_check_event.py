"""check_event reads every envelope JSON can read: the fast reader and the standard one agree on its verdict."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import domain.catalog  # noqa: F401 - registers every event type
from domain.integrity.keys import raw_public_key, verify_raw
from domain.integrity.sealing import ZERO_HASH, record_bytes
from domain.integrity.verification import check_event

AGGREGATE = "0b3f7c8e-7a0e-4a38-9d5e-1f1c2b3a4d5e"
TOPIC = "mlledger.dataset.Created.v1"
KEY_ID = "ab" * 8


def _record(key: Ed25519PrivateKey, payload: bytes, version: bytes = b"1") -> bytes:
    envelope = (
        b'{"actor":"user:ada","aggregate_id":"' + AGGREGATE.encode() + b'","aggregate_type":"Dataset",'
        b'"payload":' + payload + b',"prev_hash":"' + ZERO_HASH.encode() + b'",'
        b'"recorded_at":"2026-12-07T10:00:00.000000Z","type":"'
        + TOPIC.encode()
        + b'","v":1,"version":'
        + version
        + b"}"
    )
    digest = hashlib.sha256(envelope)
    signature = base64.b64encode(key.sign(digest.digest())).decode()
    return record_bytes(envelope, digest.hexdigest(), signature, KEY_ID)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _check(key: Ed25519PrivateKey, record: bytes, version: int = 1):  # type: ignore[no-untyped-def]
    public = raw_public_key(key.public_key())
    return check_event(7, AGGREGATE, version, TOPIC, record, lambda k, s, m: verify_raw(public, s, m))


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name":"credit"}',
        b'{"rows":100000000000000000000001}',  # beyond 64 bits: the fast reader makes it a float
        b'{"note":"\\ud800"}',  # a lone surrogate: only the standard reader takes it
        b'{"score":NaN}',  # not JSON to the fast reader
        b'{"big":1e400}',  # beyond a double
    ],
)
def test_a_signed_event_passes_whichever_reader_reads_its_envelope(key: Ed25519PrivateKey, payload: bytes) -> None:
    link, finding = _check(key, _record(key, payload))
    assert finding is None
    assert link is not None and link.prev_hash == ZERO_HASH and link.version == 1


@pytest.mark.parametrize("version", [b"100000000000000000000001", b"1e400", b"1.5", b"-9223372036854775809"])
def test_a_version_no_row_holds_is_found_by_either_reader(key: Ed25519PrivateKey, version: bytes) -> None:
    link, finding = _check(key, _record(key, b"{}", version))
    assert link is None
    assert finding is not None and "the envelope says version" in finding.what


def test_an_envelope_that_is_not_json_is_found(key: Ed25519PrivateKey) -> None:
    link, finding = _check(key, _record(key, b"{oops"))
    assert link is None and finding is not None and finding.what == "the envelope is not JSON"
