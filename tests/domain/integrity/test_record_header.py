"""Reading a stored record's header by its fixed layout agrees with parsing it as JSON."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import TamperedEvent
from domain.integrity.sealing import SealedEvent, has_plain_header, record_bytes, record_hash

digests = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=64, max_size=64)
envelopes = st.binary(max_size=64)


def read_as_json(record: bytes) -> tuple[bytes, str, str, str] | None:
    """The plain reading: the header line as JSON (None when it is malformed)."""
    header, _, envelope = record.partition(b"\n")
    try:
        fields = json.loads(header)
        return envelope, str(fields["hash"]), str(fields["signature"]), str(fields["key_id"])
    except (ValueError, KeyError, TypeError):
        return None


def read(record: bytes) -> tuple[bytes, str, str, str] | None:
    try:
        sealed = SealedEvent.from_record(record)
    except TamperedEvent:
        return None
    return sealed.envelope, sealed.hash, sealed.signature, sealed.key_id


@given(digests, signatures, st.binary(min_size=8, max_size=8), envelopes)
def test_a_written_record_is_read_by_its_layout_as_json_reads_it(
    digest: bytes, signature: bytes, key: bytes, envelope: bytes
) -> None:
    record = record_bytes(envelope, digest.hex(), base64.b64encode(signature).decode(), key.hex())

    assert has_plain_header(record)
    assert read(record) == read_as_json(record)


@given(digests, signatures, envelopes, st.integers(0, 206), st.integers(0, 255))
def test_an_edited_header_is_read_as_json_reads_it(
    digest: bytes, signature: bytes, envelope: bytes, position: int, value: int
) -> None:
    record = bytearray(record_bytes(envelope, digest.hex(), base64.b64encode(signature).decode(), "ab" * 8))
    record[position] = value

    assert read(bytes(record)) == read_as_json(bytes(record))
    as_json = read_as_json(bytes(record))
    if as_json is None:
        with pytest.raises(TamperedEvent):
            record_hash(bytes(record))
    else:
        assert record_hash(bytes(record)) == as_json[1]  # the hash of a predecessor, read for its link


def test_a_header_with_escapes_or_other_spacing_is_parsed_as_json() -> None:
    plain = record_bytes(b"{}", "ab" * 32, base64.b64encode(bytes(64)).decode(), "cd" * 8)
    spaced = plain.replace(b'":"', b'": "')
    escaped = plain.replace(b"/", b"\\/") if b"/" in plain else plain.replace(b'"hash":"a', b'"hash":"\\u0061')

    for record in (spaced, escaped):
        assert not has_plain_header(record)
        assert read(record) == read_as_json(record)
        assert record_hash(record) == "ab" * 32
