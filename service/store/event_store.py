"""Sealing on the way in, checking on the way out.

``SealingMapper`` turns a domain event into a signed envelope (DESIGN section 3)
and a stored record back into a domain event after checking that the record's
hash matches its bytes and its envelope matches the row it sits in.
``LedgerEventStore`` chains each aggregate's events by ``prev_hash``: within one
save it links the new events to each other; the first one links to the stored
head of the aggregate, taken from a cache of heads this process has read or
written, or from the database.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    EventStore,
    IntegrityError,
    JSONTranscoder,
    Mapper,
    Notification,
    Recording,
    StoredEvent,
)
from eventsourcing.utils import get_topic

from domain import catalog
from domain.aggregate import aggregate_class, aggregate_type_of, event_class, is_known_topic
from domain.errors import LedgerError, TamperedEvent, UnknownEventType, VersionConflict
from domain.integrity.canonical import EncodedObject, canonical_json
from domain.integrity.keys import SigningKey, verify_raw
from domain.integrity.sealing import (
    ZERO_HASH,
    SealedEvent,
    build_envelope,
    encode,
    format_timestamp,
    parse_timestamp,
    record_bytes,
)
from service.common.bounded_cache import BoundedCache
from service.store.keyring_guard import KEYRING_VERSION, KeyringMoved

assert catalog.AGGREGATES  # every event type is registered before events are read
_ENVELOPE_KEYS = ("originator_id", "originator_version", "timestamp", "actor", "originator_topic")


class SealingMapper(Mapper[uuid.UUID]):
    """Maps domain events to sealed stored events and back."""

    def __init__(self, signer: Callable[[], SigningKey], max_payload_bytes: int) -> None:
        super().__init__(transcoder=JSONTranscoder())
        self._signer = signer
        self.max_payload_bytes = max_payload_bytes
        self.on_read: Callable[[uuid.UUID | str, int, str], None] = lambda *_: None
        self.trusted_keys: dict[str, bytes] = {}
        self.refresh_keys: Callable[[], dict[str, bytes]] = dict
        self._stamp: tuple[Any, str] = (None, "")

    def seal_event(self, domain_event: Any, prev_hash: str) -> tuple[StoredEvent, str]:
        """Seal one event chained to ``prev_hash``; return the stored event and its hash."""
        encoded, digest = self.encode_event(domain_event, prev_hash)
        signer = self._signer()
        return self.stored(domain_event, encoded, digest, signer.sign(digest), signer.key_id), digest.hex()

    @property
    def signer(self) -> SigningKey:
        """The key sealing new events."""
        return self._signer()

    @staticmethod
    def stored(domain_event: Any, encoded: bytes, digest: bytes, signature: str, key_id: str) -> StoredEvent:
        """The stored form of an encoded, signed event."""
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=type(domain_event).TOPIC,
            state=record_bytes(encoded, digest.hex(), signature, key_id),
        )

    def encode_event(self, domain_event: Any, prev_hash: str) -> tuple[bytes, bytes]:
        """The canonical envelope of one event chained to ``prev_hash``, and its raw hash."""
        topic = getattr(type(domain_event), "TOPIC", None)
        if not isinstance(topic, str) or not is_known_topic(topic):
            raise UnknownEventType(
                f"event class {type(domain_event).__qualname__} has no registered topic; "
                "only ledger event types can be recorded",
                field="type",
            )
        state = vars(domain_event)
        payload: dict[str, Any] = {k: v for k, v in state.items() if k not in _ENVELOPE_KEYS}
        actor = state.get("actor")
        if not isinstance(actor, str) or not actor:
            raise LedgerError("every event needs an actor", field="actor")
        # The payload is encoded on its own (members encoded once already, such as a prediction's
        # input, are spliced in), and the envelope is written around its bytes.
        payload = EncodedObject(payload, canonical_json(payload, path="payload"))
        timestamp, stamp = domain_event.timestamp, self._stamp
        if timestamp is not stamp[0]:  # the events of one request often share their timestamp
            stamp = self._stamp = (timestamp, format_timestamp(timestamp))
        envelope = build_envelope(
            aggregate_id=str(domain_event.originator_id),
            aggregate_type=aggregate_type_of(topic),
            version=domain_event.originator_version,
            event_type=topic,
            recorded_at=stamp[1],
            actor=actor,
            payload=payload,
            prev_hash=prev_hash,
        )
        return encode(envelope, max_payload_bytes=self.max_payload_bytes)

    def to_stored_event(self, domain_event: DomainEventProtocol[uuid.UUID]) -> StoredEvent:
        """Not used: events are sealed in chains by :class:`LedgerEventStore`."""
        raise NotImplementedError("events are sealed by LedgerEventStore.put")

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[uuid.UUID]:
        """Check a stored record against its hash and row, and rebuild the event."""
        sealed, envelope = open_record(stored_event)
        self._check_signature(sealed, stored_event)
        cls = event_class(stored_event.topic)
        state: dict[str, Any] = dict(envelope["payload"])
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        state["timestamp"] = parse_timestamp(envelope["recorded_at"])
        state["actor"] = envelope["actor"]
        if issubclass(cls, Aggregate.Created):
            state["originator_topic"] = get_topic(aggregate_class(envelope["aggregate_type"]))
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        self.on_read(stored_event.originator_id, stored_event.originator_version, sealed.hash)
        return domain_event

    def _check_signature(self, sealed: SealedEvent, stored_event: StoredEvent) -> None:
        """The record was signed by a ledger key (so an edited, re-hashed record is refused)."""
        where = f"event {stored_event.originator_id} v{stored_event.originator_version}"
        public = self.trusted_keys.get(sealed.key_id)
        if public is None:
            self.trusted_keys = self.refresh_keys()
            public = self.trusted_keys.get(sealed.key_id)
        if public is None:
            raise TamperedEvent(f"{where}: signed by key {sealed.key_id}, which is not a ledger key")
        try:
            signature = base64.b64decode(sealed.signature, validate=True)
        except ValueError:
            raise TamperedEvent(f"{where}: the signature is not base64") from None
        if not verify_raw(public, signature, bytes.fromhex(sealed.hash)):
            raise TamperedEvent(f"{where}: the signature does not verify")


def open_record(stored_event: StoredEvent | Notification) -> tuple[SealedEvent, dict[str, Any]]:
    """Parse a stored record; raise :class:`TamperedEvent` unless hash and row agree."""
    sealed = SealedEvent.from_record(stored_event.state)
    where = f"event {stored_event.originator_id} v{stored_event.originator_version}"
    if not sealed.hash_matches():
        raise TamperedEvent(f"{where}: stored hash does not match the envelope bytes")
    envelope = sealed.envelope_fields()
    if (
        envelope.get("aggregate_id") != str(stored_event.originator_id)
        or envelope.get("version") != stored_event.originator_version
        or envelope.get("type") != stored_event.topic
    ):
        raise TamperedEvent(f"{where}: envelope does not match the stored row")
    return sealed, envelope


_PARALLEL_FROM = 64
_pool: ThreadPoolExecutor | None = None


def sign_all(signer: SigningKey, digests: list[bytes]) -> list[str]:
    """Sign many hashes; large batches use every core (Ed25519 signing releases the GIL).

    A key in a PKCS#11 token signs one hash at a time (its calls are serialized).
    """
    global _pool
    cores = os.cpu_count() or 1
    if len(digests) < _PARALLEL_FROM or cores == 1 or not signer.parallel:
        return [signer.sign(d) for d in digests]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="mlledger-sign")
    size = -(-len(digests) // cores)
    chunks = [digests[i : i + size] for i in range(0, len(digests), size)]
    return [s for part in _pool.map(lambda chunk: [signer.sign(d) for d in chunk], chunks) for s in part]


class _Heads:
    """The latest known (version, hash) of aggregates, bounded in size (cleared when full)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._heads: BoundedCache[uuid.UUID | str, tuple[int, str]] = BoundedCache(limit)
        self._lock = threading.Lock()

    def note(self, originator_id: uuid.UUID | str, version: int, event_hash: str) -> None:
        with self._lock:
            known = self._heads.get(originator_id)
            if known is None or known[0] <= version:
                self._heads.put(originator_id, (version, event_hash))

    def note_many(self, heads: list[tuple[uuid.UUID | str, int, str]]) -> None:
        """Note several heads under one lock (after a batch is written)."""
        with self._lock:
            self._heads.make_room(len(heads))
            for originator_id, version, event_hash in heads:
                known = self._heads.get(originator_id)
                if known is None or known[0] <= version:
                    self._heads.put(originator_id, (version, event_hash))

    def get(self, originator_id: uuid.UUID | str, version: int) -> str | None:
        known = self._heads.get(originator_id)
        return known[1] if known is not None and known[0] == version else None


class LedgerEventStore(EventStore[uuid.UUID]):
    """An event store that seals and chains every event it puts."""

    mapper: SealingMapper

    def __init__(self, mapper: SealingMapper, recorder: Any) -> None:
        super().__init__(mapper=mapper, recorder=recorder)
        self.heads = _Heads()
        mapper.on_read = self.heads.note
        self.keyring_version: Callable[[], int | None] = lambda: None
        """The keyring version at which the signer was last seen current (None: no check at insert)."""
        self.on_keyring_moved: Callable[[], None] = lambda: None
        """Called when an insert found the keyring changed: the ledger takes the new key or refuses."""

    def head_hash(self, originator_id: uuid.UUID, version: int) -> str:
        """The hash of the aggregate's event at ``version`` (zeros for version 0)."""
        if version == 0:
            return ZERO_HASH
        cached = self.heads.get(originator_id, version)
        if cached is not None:
            return cached
        rows = self.recorder.select_events(originator_id, gt=version - 1, lte=version, limit=1)
        if not rows:
            raise VersionConflict(f"aggregate {originator_id} has no version {version} to chain to; reload it")
        return SealedEvent.from_record(rows[0].state).hash

    def _sign_and_insert(
        self,
        domain_events: Sequence[DomainEventProtocol[uuid.UUID]],
        encoded: list[tuple[bytes, bytes]],
        kwargs: dict[str, Any],
    ) -> tuple[list[StoredEvent], Sequence[int] | None]:
        """Sign with the current key and insert; when a rotation landed meanwhile, catch up once and sign again."""
        for attempt in range(2):
            signer = self.mapper.signer
            signatures = sign_all(signer, [digest for _, digest in encoded])
            stored_events = [
                self.mapper.stored(d, envelope, digest, signature, signer.key_id)
                for d, (envelope, digest), signature in zip(domain_events, encoded, signatures, strict=True)
            ]
            expected = self.keyring_version()
            try:
                if expected is None:
                    return stored_events, self.recorder.insert_events(stored_events, **kwargs)
                return stored_events, self.recorder.insert_events(
                    stored_events, **{KEYRING_VERSION: expected}, **kwargs
                )
            except KeyringMoved:
                if attempt:
                    raise VersionConflict(
                        "the ledger keyring changed twice while this write was signed; retry"
                    ) from None
                self.on_keyring_moved()  # takes the new key, or raises LedgerKeyRetired
        raise AssertionError("unreachable")

    def put(self, domain_events: Sequence[DomainEventProtocol[uuid.UUID]], **kwargs: Any) -> list[Recording[uuid.UUID]]:
        """Seal, chain and insert ``domain_events`` in one transaction, signed with the current ledger key."""
        chain: dict[uuid.UUID, tuple[int, str]] = {}
        encoded: list[tuple[bytes, bytes]] = []
        for domain_event in domain_events:
            oid, version = domain_event.originator_id, domain_event.originator_version
            linked = chain.get(oid)
            if linked is None:
                prev = self.head_hash(oid, version - 1)
            elif linked[0] == version - 1:
                prev = linked[1]
            else:  # two writers' events for one aggregate in one batch: the later one lost the race
                raise VersionConflict(
                    f"aggregate {oid} gets version {version} after version {linked[0]} in one save; reload it"
                )
            envelope, digest = self.mapper.encode_event(domain_event, prev)
            chain[oid] = (version, digest.hex())
            encoded.append((envelope, digest))
        hashes = [digest.hex() for _, digest in encoded]
        try:
            stored_events, notification_ids = self._sign_and_insert(domain_events, encoded, kwargs)
        except IntegrityError:
            first = domain_events[0]
            raise VersionConflict(
                f"aggregate {first.originator_id} was changed by another writer "
                f"(version {first.originator_version} or a later one is taken); "
                "reload it and try again"
            ) from None
        self.heads.note_many(
            [(s.originator_id, s.originator_version, h) for s, h in zip(stored_events, hashes, strict=True)]
        )
        return [
            Recording(
                d,
                Notification(
                    originator_id=s.originator_id,
                    originator_version=s.originator_version,
                    topic=s.topic,
                    state=s.state,
                    id=n_id,
                ),
            )
            for d, s, n_id in zip(domain_events, stored_events, notification_ids or [], strict=True)
        ]
