"""Tests of domain.integrity.sealing and .keys: the signed envelope, its stored record and its key id."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidPayload, PayloadTooLarge, TamperedEvent
from domain.integrity.canonical import encoded_object
from domain.integrity.keys import Signer, key_id, verify_signature
from domain.integrity.sealing import (
    ZERO_HASH,
    SealedEvent,
    build_envelope,
    format_timestamp,
    parse_timestamp,
    seal,
)

SIGNER = Signer.generate()


def _envelope(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return build_envelope(
        aggregate_id="6f1c1f0e-4a43-4b6e-9d5c-2f0e8f8d3a11",
        aggregate_type="DatasetVersion",
        version=1,
        event_type="mlledger.dataset.Registered.v1",
        recorded_at="2026-11-22T10:00:00.000000Z",
        actor="user:alice",
        payload=payload if payload is not None else {"name": "credit", "size": 1024},
        prev_hash=ZERO_HASH,
    )


def test_a_sealed_event_survives_its_stored_record() -> None:
    sealed = seal(_envelope(), SIGNER)

    restored = SealedEvent.from_record(sealed.to_record())

    assert restored == sealed
    assert restored.hash_matches()


def test_a_record_read_back_as_a_memoryview_parses_like_bytes() -> None:
    record = seal(_envelope(), SIGNER).to_record()

    assert SealedEvent.from_record(memoryview(record)) == SealedEvent.from_record(record)


def test_the_hash_is_sha256_of_the_envelope_bytes() -> None:
    sealed = seal(_envelope(), SIGNER)

    assert sealed.hash == hashlib.sha256(sealed.envelope).hexdigest()


def test_the_signature_verifies_over_the_raw_hash_bytes() -> None:
    sealed = seal(_envelope(), SIGNER)

    assert verify_signature(SIGNER.public_key, sealed.signature, bytes.fromhex(sealed.hash))


def test_the_signature_does_not_verify_under_another_key() -> None:
    sealed = seal(_envelope(), SIGNER)

    assert not verify_signature(Signer.generate().public_key, sealed.signature, bytes.fromhex(sealed.hash))


def test_the_seal_names_the_signing_key() -> None:
    assert seal(_envelope(), SIGNER).key_id == SIGNER.key_id


def test_the_envelope_bytes_are_rfc8785_canonical() -> None:
    envelope = _envelope(
        {"zeta": 1, "alpha": [1.5, 1e21, -0.0], "naïve": "\U0001f600", "\ue000": {"b": None, "a": True}}
    )

    sealed = seal(envelope, SIGNER)

    assert sealed.envelope == rfc8785.dumps(envelope)
    assert json.loads(sealed.envelope) == envelope


def test_changing_any_byte_of_the_envelope_breaks_the_hash() -> None:
    sealed = seal(_envelope(), SIGNER)
    survivors = []

    for at in range(len(sealed.envelope)):
        edited = sealed.envelope[:at] + bytes([sealed.envelope[at] ^ 0x01]) + sealed.envelope[at + 1 :]
        if SealedEvent(edited, sealed.hash, sealed.signature, sealed.key_id).hash_matches():
            survivors.append(at)

    assert survivors == []


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"hash":"00","key_id":"k","signature":"s"}', id="no-header-line"),
        pytest.param(b"not json\n{}", id="header-not-json"),
        pytest.param(b'{"hash":"00","key_id":"k"}\n{}', id="header-missing-signature"),
        pytest.param(b"[1,2,3]\n{}", id="header-a-list"),
        pytest.param(b"null\n{}", id="header-null"),
        pytest.param(b"\xff\xfe\n{}", id="header-not-utf8"),
    ],
)
def test_a_malformed_record_is_refused_as_tampered(record: bytes) -> None:
    with pytest.raises(TamperedEvent):
        SealedEvent.from_record(record)


@pytest.mark.parametrize("envelope", [b"not json", b"[1,2]", b'"text"'], ids=["not-json", "a-list", "a-string"])
def test_an_envelope_that_is_not_a_json_object_is_refused_as_tampered(envelope: bytes) -> None:
    sealed = SealedEvent(envelope, hashlib.sha256(envelope).hexdigest(), "", SIGNER.key_id)

    with pytest.raises(TamperedEvent):
        sealed.envelope_fields()


def test_a_payload_value_json_cannot_carry_is_refused_naming_its_field() -> None:
    with pytest.raises(InvalidPayload) as caught:
        seal(_envelope({"metrics": {"auc": float("nan")}}), SIGNER)

    assert caught.value.field == "payload.metrics.auc"


def test_an_event_exactly_at_the_size_limit_is_sealed() -> None:
    envelope = _envelope({"blob": "x" * 500})
    limit = len(rfc8785.dumps(envelope))

    sealed = seal(envelope, SIGNER, max_payload_bytes=limit)

    assert len(sealed.envelope) == limit


def test_an_event_one_byte_over_the_size_limit_is_refused() -> None:
    envelope = _envelope({"blob": "x" * 500})
    limit = len(rfc8785.dumps(envelope)) - 1

    with pytest.raises(PayloadTooLarge) as caught:
        seal(envelope, SIGNER, max_payload_bytes=limit)

    assert caught.value.field == "payload"


def test_a_key_id_is_the_first_16_hex_of_sha256_of_the_raw_public_key() -> None:
    raw = SIGNER.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    assert key_id(SIGNER.public_key) == hashlib.sha256(raw).hexdigest()[:16]
    assert SIGNER.key_id == key_id(SIGNER.public_key)


aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)


@settings(max_examples=100, deadline=None)
@given(aware_datetimes)
def test_a_formatted_timestamp_parses_back_to_the_same_instant(moment: datetime) -> None:
    assert parse_timestamp(format_timestamp(moment)) == moment


def test_a_timestamp_is_written_in_utc_with_microseconds_and_a_z() -> None:
    moment = datetime(2026, 11, 22, 15, 30, 0, 7, tzinfo=timezone(timedelta(hours=5, minutes=30)))

    assert format_timestamp(moment) == "2026-11-22T10:00:00.000007Z"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 11, 22, 10, 0, 0))


def test_a_timestamp_without_the_z_is_not_parsed() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("2026-11-22T10:00:00.000000+00:00")


def test_a_timestamp_before_year_1000_keeps_four_year_digits_and_round_trips() -> None:
    moment = datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)

    text = format_timestamp(moment)

    assert text == "0999-12-31T23:59:59.000000Z"
    assert parse_timestamp(text) == moment


_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)  # any text but lone surrogates


@settings(max_examples=300, deadline=None)
@given(
    texts=st.fixed_dictionaries(
        {name: _TEXT for name in ("actor", "aggregate_id", "aggregate_type", "prev_hash", "recorded_at", "event_type")}
    ),
    version=st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
    payload=st.dictionaries(_TEXT, st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), _TEXT), max_size=5),
)
def test_an_envelope_around_an_encoded_payload_is_rfc8785_canonical(
    texts: dict[str, str], version: int, payload: dict[str, Any]
) -> None:
    plain = build_envelope(version=version, payload=payload, **texts)
    encoded = {**plain, "payload": encoded_object(payload)}

    sealed = seal(encoded, SIGNER)

    assert sealed.envelope == rfc8785.dumps(plain)


def test_an_envelope_with_a_lone_surrogate_around_an_encoded_payload_is_refused() -> None:
    envelope = {**_envelope(), "actor": "user:\ud800", "payload": encoded_object({"a": 1})}

    with pytest.raises(InvalidPayload) as refused:
        seal(envelope, SIGNER)

    assert refused.value.field == "actor"


_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53) + 1, 2**53 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        _TEXT,
    ),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_TEXT, children, max_size=4)),
    max_leaves=20,
)


@given(payload=st.dictionaries(_TEXT, _VALUES, max_size=6))
@settings(max_examples=200, deadline=None)
def test_a_sealed_envelope_decodes_to_what_the_standard_json_reader_reads(payload: dict[str, Any]) -> None:
    sealed = seal(_envelope(payload), SIGNER)

    assert sealed.envelope_fields() == json.loads(sealed.envelope)


@pytest.mark.parametrize(
    "envelope",
    [
        b'{"a":18446744073709551616}',
        b'{"a":-9223372036854775809}',
        b'{"a":[1,-99999999999999999999]}',
        b'{"a":NaN}',
        b'{"a":"\\ud800"}',
    ],
    ids=["integer-beyond-64-bits", "below-64-bits-in-19-digits", "in-a-list", "nan", "lone-surrogate"],
)
def test_an_envelope_the_fast_reader_refuses_or_reads_otherwise_is_read_as_json_reads_it(envelope: bytes) -> None:
    sealed = SealedEvent(envelope, hashlib.sha256(envelope).hexdigest(), "", SIGNER.key_id)

    decoded = sealed.envelope_fields()

    assert json.dumps(decoded) == json.dumps(json.loads(envelope))


@given(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_of_any_size_are_read_as_json_reads_them(integer: int, number: float) -> None:
    envelope = json.dumps({"n": integer, "items": [number, integer], "f": number}).encode()
    sealed = SealedEvent(envelope, hashlib.sha256(envelope).hexdigest(), "", SIGNER.key_id)

    decoded = sealed.envelope_fields()

    assert decoded == json.loads(envelope)
    assert type(decoded["n"]) is int
