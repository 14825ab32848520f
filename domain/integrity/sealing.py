"""The signed event: envelope, canonical hash, Ed25519 seal, stored record.

The envelope (DESIGN section 3) is encoded once in RFC 8785 canonical form; its
sha256 is the event hash; the ledger key signs the 32 raw hash bytes. The stored
record is one header line of JSON with hash, signature and key id, a newline,
then the canonical envelope bytes exactly as hashed, so verification hashes the
stored bytes and never depends on re-encoding. (Canonical JSON never contains a
raw newline, so the split is unambiguous.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

import orjson

from domain.errors import PayloadTooLarge, TamperedEvent
from domain.integrity.canonical import MAX_SAFE_INTEGER, EncodedObject, canonical_json
from domain.integrity.keys import SigningKey

ENVELOPE_VERSION = 1
ZERO_HASH = "0" * 64
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``: ``2026-11-22T10:00:00.000000Z``."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp`."""
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def build_envelope(
    *,
    aggregate_id: str,
    aggregate_type: str,
    version: int,
    event_type: str,
    recorded_at: str,
    actor: str,
    payload: dict[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    """The envelope of DESIGN section 3, as a plain dict ready to canonicalize."""
    return {
        "v": ENVELOPE_VERSION,
        "aggregate_id": aggregate_id,
        "aggregate_type": aggregate_type,
        "version": version,
        "type": event_type,
        "recorded_at": recorded_at,
        "actor": actor,
        "payload": payload,
        "prev_hash": prev_hash,
    }


def record_bytes(envelope: bytes, event_hash: str, signature: str, key_id: str) -> bytes:
    """The stored record: the header line (hash, key id, signature), a newline, the envelope bytes."""
    # hex and base64 need no JSON escaping, so the header is written directly.
    return f'{{"hash":"{event_hash}","key_id":"{key_id}","signature":"{signature}"}}\n'.encode("ascii") + envelope


_PLAIN_HEADER_LENGTH = 207
_PLAIN_HASH = slice(9, 73)


def has_plain_header(record: bytes) -> bool:
    """Whether ``record`` starts with the header exactly as :func:`record_bytes` writes it.

    That header has its fields at fixed offsets (a 64-hex hash, a 16-hex key
    id, an 88-character base64 signature: nothing to unescape), so they can be sliced
    out instead of parsed: verification reads millions of records. Any other
    header is parsed as JSON; both readings agree
    (tests/domain/integrity/test_record_header.py).
    """
    return (
        len(record) >= _PLAIN_HEADER_LENGTH
        and record.startswith(b'{"hash":"')
        and record[73:85] == b'","key_id":"'
        and record[101:116] == b'","signature":"'
        and record[204:207] == b'"}\n'
        and record[_PLAIN_HASH].isalnum()
        and record[85:101].isalnum()
        and record[116:204].rstrip(b"=").replace(b"+", b"").replace(b"/", b"").isalnum()
    )


def record_hash(record: bytes) -> str:
    """The hash a stored record's header names (sliced out of a plain header, parsed from any other);
    raise :class:`TamperedEvent` if the record is malformed. Verification reads it for every event's
    predecessor."""
    if has_plain_header(record):
        return record[_PLAIN_HASH].decode("ascii")
    return SealedEvent.from_record(record).hash


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def may_hold_long_integer(document: bytes) -> bool:
    """Whether ``document`` has a run of 19 digits or more, as every integer ``orjson`` would not read
    exactly has (beyond 64 bits: below -2**63, whose digits number 19, or above 2**64-1).

    So have a few other documents (a long fraction), which are then read by
    ``json`` too. Two C passes (digits mapped to one, then a substring search)
    cost a quarter of a regular expression's search.
    """
    return _NINETEEN_DIGITS in document.translate(_DIGITS_AS_ZERO)


def read_envelope(envelope: bytes) -> Any:
    """An envelope's JSON value; ``ValueError`` when it is not UTF-8 JSON.

    ``orjson`` reads it (an eighth of ``json``'s time on a prediction's
    envelope): it reads every canonical envelope as ``json`` does, since
    canonical JSON holds no integer beyond 2**53-1, no lone surrogate and no
    infinity. An envelope that may hold an integer beyond 64 bits (which
    ``orjson`` would read as a float), or that it refuses, is read by ``json``,
    which decides.
    """
    try:
        if may_hold_long_integer(envelope):
            raise orjson.JSONDecodeError("a long integer: read it exactly", "", 0)
        return orjson.loads(envelope)
    except orjson.JSONDecodeError:
        return json.loads(envelope.decode("utf-8"))  # canonical JSON is UTF-8


@dataclass(frozen=True, slots=True)
class SealedEvent:
    """An envelope in canonical bytes with its hash, signature and key id."""

    envelope: bytes
    hash: str
    signature: str
    key_id: str

    def to_record(self) -> bytes:
        """The bytes stored in the event store's ``state`` column."""
        return record_bytes(self.envelope, self.hash, self.signature, self.key_id)

    @classmethod
    def from_record(cls, record: bytes | memoryview) -> SealedEvent:
        """Parse a stored record; raise :class:`TamperedEvent` if it is malformed."""
        data = bytes(record)
        if has_plain_header(data):
            return cls(
                envelope=data[_PLAIN_HEADER_LENGTH:],
                hash=data[_PLAIN_HASH].decode("ascii"),
                key_id=data[85:101].decode("ascii"),
                signature=data[116:204].decode("ascii"),
            )
        header_bytes, sep, envelope = data.partition(b"\n")
        try:
            if not sep:
                raise ValueError("no header line")
            header = json.loads(header_bytes)
            return cls(
                envelope=envelope,
                hash=str(header["hash"]),
                signature=str(header["signature"]),
                key_id=str(header["key_id"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise TamperedEvent(f"stored record is malformed: {exc}") from None

    def computed_hash(self) -> str:
        """sha256 of the stored envelope bytes, in hex."""
        return hashlib.sha256(self.envelope).hexdigest()

    def hash_matches(self) -> bool:
        """True when the stored hash is the hash of the stored envelope."""
        return self.computed_hash() == self.hash

    def envelope_fields(self) -> dict[str, Any]:
        """The envelope decoded into a dict (see :func:`read_envelope`)."""
        try:
            fields = read_envelope(self.envelope)
        except ValueError as exc:
            raise TamperedEvent(f"envelope is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise TamperedEvent("envelope is not a JSON object")
        return fields


def encode(envelope: dict[str, Any], *, max_payload_bytes: int | None = None) -> tuple[bytes, bytes]:
    """Canonicalize and hash an envelope; return (canonical bytes, raw sha256).

    Raises :class:`~domain.errors.InvalidPayload` for values canonical JSON cannot
    carry and :class:`PayloadTooLarge` when the canonical form exceeds
    ``max_payload_bytes``. The hash is all the next event of the chain needs, so
    signing can happen later (and in parallel).
    """
    encoded = _spliced_envelope(envelope) or canonical_json(envelope, path="")
    if max_payload_bytes is not None and len(encoded) > max_payload_bytes:
        raise PayloadTooLarge(
            f"the event is {len(encoded)} bytes in canonical form, over the limit of {max_payload_bytes} bytes",
            field="payload",
        )
    return encoded, hashlib.sha256(encoded).digest()


_TEXT_MEMBERS = ("actor", "aggregate_id", "aggregate_type", "prev_hash", "recorded_at", "type")
_MEMBERS = frozenset({*_TEXT_MEMBERS, "payload", "v", "version"})


def _spliced_envelope(envelope: dict[str, Any]) -> bytes | None:
    """``canonical_json(envelope)`` written directly around a payload already encoded, else None.

    The envelope's members are fixed ASCII names, so their canonical order is
    known; six are strings (escaped as canonical JSON escapes them), two are
    integers, and the payload is an :class:`EncodedObject` whose bytes go in
    as they are. Anything else (a plain payload, an unexpected member or type,
    a lone surrogate) returns None and takes the general encoder, which also
    names what is wrong.
    """
    payload = envelope.get("payload")
    if type(payload) is not EncodedObject or envelope.keys() != _MEMBERS:
        return None
    version, v = envelope["version"], envelope["v"]
    texts = [envelope[name] for name in _TEXT_MEMBERS]
    if (
        type(version) is not int
        or type(v) is not int
        or not -MAX_SAFE_INTEGER <= version <= MAX_SAFE_INTEGER
        or not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER
        or any(type(text) is not str for text in texts)
    ):
        return None
    actor, aggregate_id, aggregate_type, prev_hash, recorded_at, event_type = map(encode_basestring, texts)
    try:
        head = f'{{"actor":{actor},"aggregate_id":{aggregate_id},"aggregate_type":{aggregate_type},"payload":'
        tail = f',"prev_hash":{prev_hash},"recorded_at":{recorded_at},"type":{event_type},"v":{v},"version":{version}}}'
        return head.encode() + payload.canonical + tail.encode()
    except UnicodeEncodeError:
        return None


def seal(envelope: dict[str, Any], signer: SigningKey, *, max_payload_bytes: int | None = None) -> SealedEvent:
    """Canonicalize, hash and sign an envelope (see :func:`encode` for the errors)."""
    encoded, digest = encode(envelope, max_payload_bytes=max_payload_bytes)
    return SealedEvent(envelope=encoded, hash=digest.hex(), signature=signer.sign(digest), key_id=signer.key_id)
