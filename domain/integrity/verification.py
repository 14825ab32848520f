"""Pure checks behind ``mlledger verify`` and bundle verification.

Each check takes plain values (stored rows, hashes, keys) and returns findings;
nothing here reads a database. A :class:`Finding` names the event it concerns so
a verifier can report the first bad event in ledger order.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

from domain.aggregate import aggregate_type_of, is_known_topic
from domain.errors import TamperedEvent
from domain.integrity import merkle
from domain.integrity.key_lifetimes import KeyWindow
from domain.integrity.keys import key_id, load_public_key_pem, raw_public_key, verify_raw
from domain.integrity.sealing import ENVELOPE_VERSION, ZERO_HASH, SealedEvent, read_envelope

UNPLACED = 2**62
"""Sort key of findings that belong to no particular event."""


@dataclass(frozen=True, order=True)
class Finding:
    """One thing verification found wrong."""

    notification_id: int
    aggregate_id: str
    version: int
    what: str

    def describe(self) -> str:
        """A one-line, human description."""
        if self.notification_id >= UNPLACED:
            return self.what
        return (
            f"notification {self.notification_id} (aggregate {self.aggregate_id} version {self.version}): {self.what}"
        )


class EventLink(NamedTuple):
    """What the chain and Merkle checks need of each verified event (a tuple: cheap to send between processes)."""

    notification_id: int
    aggregate_id: str
    version: int
    hash: str
    prev_hash: str


class SignatureVerifier(Protocol):
    """Checks an Ed25519 signature over a message with a trusted key.

    Returns True or False for a trusted key, None when ``key_id`` is not trusted.
    """

    def __call__(self, key_id: str, signature: bytes, message: bytes) -> bool | None: ...


def check_event(
    notification_id: int,
    aggregate_id: str,
    version: int,
    topic: str,
    record: bytes,
    verify_signature: SignatureVerifier,
    windows: Mapping[str, KeyWindow] | None = None,
) -> tuple[EventLink | None, Finding | None]:
    """Check one stored event: record format, hash, signature (inside its key's window), envelope vs row."""

    def finding(what: str) -> tuple[None, Finding]:
        return None, Finding(notification_id, aggregate_id, version, what)

    try:
        sealed = SealedEvent.from_record(record)
    except TamperedEvent as exc:
        return finding(exc.detail)
    digest = hashlib.sha256(sealed.envelope)
    if digest.hexdigest() != sealed.hash:
        return finding("the stored hash does not match the envelope bytes (the event was edited)")
    try:
        signature = base64.b64decode(sealed.signature, validate=True)
    except ValueError:
        return finding("the signature is not valid base64")
    verdict = verify_signature(sealed.key_id, signature, digest.digest())
    if verdict is None:
        return finding(f"signed by key {sealed.key_id!r}, which is not a ledger key (forged or foreign event)")
    if not verdict:
        return finding(f"the signature does not verify with ledger key {sealed.key_id!r}")
    window = None if windows is None else windows.get(sealed.key_id)
    if window is not None:
        refused = window.refusal(notification_id)
        if refused is not None:
            return finding(refused)
    try:
        envelope: Any = read_envelope(sealed.envelope)
    except ValueError:
        return finding("the envelope is not JSON")
    if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
        return finding("the envelope has an unknown format")
    if envelope.get("aggregate_id") != aggregate_id:
        return finding(f"the envelope names aggregate {envelope.get('aggregate_id')}")
    if envelope.get("version") != version:
        return finding(f"the envelope says version {envelope.get('version')}, the row says {version}")
    if envelope.get("type") != topic:
        return finding(f"the row's topic {topic!r} differs from the envelope's {envelope.get('type')!r}")
    if not is_known_topic(topic):
        return finding(f"unknown event type {topic!r}")
    if envelope.get("aggregate_type") != aggregate_type_of(topic):
        return finding("the envelope names the wrong aggregate type")
    prev_hash = envelope.get("prev_hash")
    if not isinstance(prev_hash, str):
        return finding("the envelope has no prev_hash")
    return EventLink(notification_id, aggregate_id, version, sealed.hash, prev_hash), None


def check_chains(links: Iterable[EventLink], heads: Mapping[str, tuple[int, str]] | None = None) -> list[Finding]:
    """Versions run 1..n with no gap per aggregate, each linked to the one before.

    With ``heads`` (aggregate id -> version and hash of its last event before
    ``links``, already verified), an aggregate's chain continues from its head.
    """
    by_aggregate: dict[str, list[EventLink]] = {}
    for link in links:
        by_aggregate.setdefault(link.aggregate_id, []).append(link)
    findings: list[Finding] = []
    for aggregate_id, chain in by_aggregate.items():
        chain.sort(key=lambda link: link.version)
        head = None if heads is None else heads.get(aggregate_id)
        expected_version, expected_prev = (1, ZERO_HASH) if head is None else (head[0] + 1, head[1])
        for link in chain:
            if link.version != expected_version:
                missing = (
                    f"version {expected_version} is missing"
                    if link.version > expected_version
                    else f"version {link.version} occurs twice"
                )
                findings.append(
                    Finding(
                        link.notification_id,
                        aggregate_id,
                        link.version,
                        f"version {link.version} follows version {expected_version - 1}: {missing}",
                    )
                )
                break
            if link.prev_hash != expected_prev:
                findings.append(
                    Finding(
                        link.notification_id,
                        aggregate_id,
                        link.version,
                        "prev_hash does not match the hash of the previous version "
                        "(an event of this aggregate was changed, removed or reordered)",
                    )
                )
                break
            expected_version, expected_prev = link.version + 1, link.hash
    return findings


def check_link(link: EventLink, previous: str | None) -> Finding | None:
    """One event's place in its aggregate's chain, without the rest of the chain.

    ``previous`` is the stored hash of the aggregate's event at ``link.version - 1``
    (None when no such event is stored; ignored for version 1, which follows the
    zero hash). That event's own check holds its stored hash to its envelope and
    signature, so a chain whose every link passes is the chain :func:`check_chains`
    accepts, event by event: versions start at 1, none is missing, each follows
    the hash of the one before.
    """
    if link.version > 1 and previous is None:
        return Finding(
            link.notification_id,
            link.aggregate_id,
            link.version,
            f"version {link.version - 1}, which this event follows, is missing",
        )
    expected = ZERO_HASH if link.version == 1 else previous
    if link.version < 1 or link.prev_hash != expected:
        return Finding(
            link.notification_id,
            link.aggregate_id,
            link.version,
            "prev_hash does not match the hash of the previous version "
            "(an event of this aggregate was changed, removed or reordered)",
        )
    return None


KEYRING_ESTABLISHED = "mlledger.keyring.Established.v1"
KEYRING_ROTATED = "mlledger.keyring.Rotated.v1"
KEYRING_REVOKED = "mlledger.keyring.Revoked.v1"


@dataclass
class LedgerKeys:
    """The trusted ledger keys (key id -> raw public key) and the window in which each signs."""

    keys: dict[str, bytes]
    windows: dict[str, KeyWindow]

    def refusal(self, key_id: str, position: int) -> str | None:
        """Why ``key_id`` may not sign at ``position`` (None when it may, or when it is no ledger key)."""
        window = self.windows.get(key_id)
        return None if window is None else window.refusal(position)


def follow_keyring(events: Iterable[tuple[int, str, int, str, bytes]]) -> tuple[LedgerKeys, Finding | None]:
    """The trusted ledger keys and their windows, from the keyring's events in order.

    ``events`` are (notification id, aggregate id, version, topic, record).
    The genesis event must be signed by the key it introduces; each rotation
    and revocation by the key current at that point (a rotation retires it).
    Returns what was established and the first problem, if any (the walk stops there).
    """
    found = LedgerKeys({}, {})
    keys, windows = found.keys, found.windows
    current: str | None = None
    for nid, aggregate_id, version, topic, record in events:

        def problem(what: str, nid: int = nid, aggregate_id: str = aggregate_id, version: int = version) -> Finding:
            return Finding(nid, aggregate_id, version, what)

        try:
            sealed = SealedEvent.from_record(record)
            envelope = sealed.envelope_fields()
            payload = envelope["payload"]
            new_key = load_public_key_pem(payload["public_key_pem"]) if topic != KEYRING_REVOKED else None
        except Exception as exc:
            return found, problem(f"key event cannot be read: {exc}")
        if envelope.get("type") != topic or envelope.get("version") != version:
            return found, problem("key event envelope does not match its row")
        if topic == KEYRING_ESTABLISHED:
            if keys:
                return found, problem("a second genesis key")
            assert new_key is not None
            signer_raw = raw_public_key(new_key)
        elif current is None:
            return found, problem(f"{topic} before the genesis key")
        elif sealed.key_id != current:
            return found, problem(
                f"key event signed by key {sealed.key_id}, not by the current ledger key {current}"
                if sealed.key_id in keys
                else f"key event signed by key {sealed.key_id}, which is not a ledger key"
            )
        elif topic == KEYRING_ROTATED:
            if payload.get("previous_key_id") != current:
                return found, problem("the rotation replaces a key that is not the current ledger key")
            signer_raw = keys[current]
        elif topic == KEYRING_REVOKED:
            revoked, since = payload.get("key_id"), payload.get("compromised_since")
            if revoked not in windows or revoked == current or not isinstance(since, int) or since < 0:
                return found, problem("the revocation names no retired ledger key or no position")
            signer_raw = keys[current]
        else:
            return found, problem(f"unexpected event {topic} in the keyring")
        if not sealed.hash_matches() or not verify_raw(
            signer_raw, base64.b64decode(sealed.signature), bytes.fromhex(sealed.hash)
        ):
            return found, problem("key event signature or hash does not verify")
        if topic == KEYRING_REVOKED:
            windows[revoked] = replace(windows[revoked], compromised_since=since, revoked_at=nid)
            continue
        assert new_key is not None
        new_id = key_id(new_key)
        if topic == KEYRING_ESTABLISHED:
            windows[new_id] = KeyWindow(new_id, first=nid)
        else:
            assert current is not None
            windows[current] = replace(windows[current], last=nid)
            windows[new_id] = KeyWindow(new_id, first=nid + 1)
        keys[new_id] = raw_public_key(new_key)
        current = new_id
    return found, None


def follow_key_chain(events: Iterable[tuple[int, str, int, str, bytes]]) -> tuple[dict[str, bytes], Finding | None]:
    """The trusted ledger keys (key id -> raw public key), from the keyring's events (see :func:`follow_keyring`)."""
    found, problem = follow_keyring(events)
    return found.keys, problem


@dataclass(frozen=True)
class Leaf:
    """A stored transparency-log leaf."""

    leaf_index: int
    notification_id: int
    aggregate_id: str
    version: int
    leaf_hash: bytes


def check_leaves(links: Iterable[EventLink], leaves: Iterable[Leaf], first: int = 0) -> list[Finding]:
    """The log's leaves are the events' hashes, in notification order, none missing.

    ``leaves`` start at leaf index ``first``, ``links`` with the event it records.
    Both are read in step and only as far as the first finding, so either may be
    a stream (the caller reads on what it still needs).
    """
    events = iter(links)
    for position, leaf in enumerate(leaves):
        if leaf.leaf_index != first + position:
            return [
                Finding(
                    leaf.notification_id,
                    leaf.aggregate_id,
                    leaf.version,
                    f"transparency log leaf {first + position} is missing",
                )
            ]
        link = next(events, None)
        if link is None:
            return [
                Finding(
                    leaf.notification_id,
                    leaf.aggregate_id,
                    leaf.version,
                    f"transparency log leaf {first + position} records this event, "
                    "but it is missing from the event store",
                )
            ]
        if link.notification_id != leaf.notification_id:
            if leaf.notification_id < link.notification_id:
                return [
                    Finding(
                        leaf.notification_id,
                        leaf.aggregate_id,
                        leaf.version,
                        f"transparency log leaf {first + position} records this event, "
                        "but it is missing from the event store",
                    )
                ]
            return [
                Finding(
                    link.notification_id,
                    link.aggregate_id,
                    link.version,
                    f"this event is not in the transparency log (leaf {first + position} "
                    f"records notification {leaf.notification_id}): it was inserted",
                )
            ]
        if merkle.leaf_hash(bytes.fromhex(link.hash)) != leaf.leaf_hash:
            return [
                Finding(
                    link.notification_id,
                    link.aggregate_id,
                    link.version,
                    f"the event's hash differs from transparency log leaf {first + position}",
                )
            ]
    return []


def complete_levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree node of the tree over ``leaf_hashes``, level by level (level 0: the leaves)."""
    levels: list[list[bytes]] = []
    row = leaf_hashes
    while row:
        levels.append(row)
        row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
    return levels


def complete_nodes(leaf_hashes: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree node (level, index) of the tree over ``leaf_hashes``."""
    nodes: dict[tuple[int, int], bytes] = {}
    level, row = 0, leaf_hashes
    while row:
        for index, digest in enumerate(row):
            nodes[(level, index)] = digest
        row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
    return nodes


def check_nodes(
    expected: Mapping[tuple[int, int], bytes],
    stored: Mapping[tuple[int, int], bytes],
    leaves: list[Leaf],
) -> list[Finding]:
    """Stored Merkle nodes equal the ones recomputed from the leaves."""
    if expected == stored:
        return []
    for node_id in sorted(set(expected) | set(stored)):
        if expected.get(node_id) != stored.get(node_id):
            level, index = node_id
            first = index << level
            state = "missing" if node_id not in stored else ("extra" if node_id not in expected else "changed")
            if first < len(leaves):
                leaf = leaves[first]
                return [
                    Finding(
                        leaf.notification_id,
                        leaf.aggregate_id,
                        leaf.version,
                        f"transparency log node (level {level}, index {index}) covering this event is {state}",
                    )
                ]
            return [Finding(UNPLACED, "-", 0, f"transparency log node (level {level}, index {index}) is {state}")]
    return []
