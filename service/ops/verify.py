"""``mlledger verify``: check the whole ledger, on every core.

1. The key chain: the genesis key and each rotation (signed by the key it
   replaces), anchored on a public key the caller trusts; each key's window of
   positions and the compromise a revocation recorded.
2. Every event, in parallel worker processes that each read a range of
   notification ids: record format, hash, Ed25519 signature by a key inside its
   window (and not after its recorded compromise), envelope vs row.
3. Per aggregate: versions 1..n with no gap, each ``prev_hash`` linked.
4. The transparency log: leaves are the event hashes in notification order,
   stored nodes equal the recomputed tree, every checkpoint is signed by a
   ledger key and its root is the root of the tree at its size, and no leaf
   names an event that is gone.

The first finding in ledger order is reported, and every event signed by a
revoked key after its compromise is named; the process exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine

from domain import catalog
from domain.integrity import merkle
from domain.integrity.checkpoint import CheckpointError, verify_checkpoint
from domain.integrity.compact_range import CompactRange
from domain.integrity.key_lifetimes import COMPROMISED_MARK, KeyWindow
from domain.integrity.keys import verify_raw
from domain.integrity.ledger_key import KEYRING_ID, LedgerKeyring
from domain.integrity.sealing import SealedEvent, record_hash
from domain.integrity.verification import (
    UNPLACED,
    EventLink,
    Finding,
    Leaf,
    LedgerKeys,
    check_event,
    check_leaves,
    check_link,
    follow_keyring,
)
from projections import transparency_log as tlog
from projections.transparency_log import StoredCheckpoint
from service.ops.verified_state import VerifiedState
from service.ops.verify_tree import TreeCheck, stream_leaves
from service.settings import Settings
from service.store.persistence import create_engine, events_select, events_table, notification_id_column, read_events

log = logging.getLogger(__name__)

CHUNK = 10_000
MIN_CHUNK = 2_000
assert catalog.AGGREGATES  # every event type is registered before verification
KEYRING_TOPICS = (LedgerKeyring.Established.TOPIC, LedgerKeyring.Rotated.TOPIC, LedgerKeyring.Revoked.TOPIC)


@dataclass
class Report:
    """What verification saw and found."""

    events: int = 0
    aggregates: int = 0
    leaves: int = 0
    unlogged: int = 0
    checkpoints: int = 0
    latest_checkpoint: str | None = None
    keys: list[str] = field(default_factory=list)
    windows: dict[str, KeyWindow] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    since: int = 0
    """The tree size verification started from (0: the whole ledger)."""
    state: VerifiedState | None = None
    """The latest checkpoint verified, to start the next incremental run from."""

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.findings

    def first(self) -> Finding | None:
        """The first finding in ledger order."""
        return min(self.findings) if self.findings else None

    def compromised(self) -> list[Finding]:
        """The events signed by a revoked key after its compromise, in ledger order."""
        return sorted(f for f in self.findings if COMPROMISED_MARK in f.what)


def _aggregate_id(value: Any) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _rows(engine: Engine, start: int, stop: int) -> Iterator[tuple[int, str, int, str, bytes]]:
    """Events in [start, stop) by notification id, read with the driver's own cursor (binary on
    PostgreSQL, ids as text): row wrapping costs more than hashing here."""
    column = notification_id_column(engine)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        sql = f"{events_select(engine)} WHERE {column} >= ? AND {column} < ? ORDER BY {column}"
    else:  # PostgreSQL writes a uuid as text the way str(uuid.UUID) does
        sql = (
            f"SELECT {column}, originator_id::text, originator_version, topic, state FROM {events_table(engine)} "  # noqa: S608
            f"WHERE {column} >= %s AND {column} < %s ORDER BY {column}"
        )
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor() if sqlite else raw.cursor(binary=True)
        try:
            cursor.execute(sql, (start, stop))
            if sqlite:
                for nid, oid, version, topic, state in cursor:
                    yield int(nid), _aggregate_id(oid), int(version), topic, bytes(state)
            else:
                yield from cursor
        finally:
            cursor.close()


def _linked_rows(engine: Engine, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    """Events in [start, stop) by notification id, each with the head of the record of its aggregate's
    version before it (None for version 1 and when that event is not stored): enough to check the link
    without the chain. The version before is looked up only for versions after the first."""
    column = notification_id_column(engine)
    table = events_table(engine)
    sqlite = engine.dialect.name == "sqlite"
    # The header (hash, key id, signature) is well inside the first 512 bytes of a record.
    head = "substr(p.state, 1, 512)" if sqlite else "substring(p.state from 1 for 512)"
    oid = "e.originator_id" if sqlite else "e.originator_id::text"
    mark = "?" if sqlite else "%s"
    sql = (
        f"SELECT e.{column}, {oid}, e.originator_version, e.topic, e.state, "  # noqa: S608
        f"CASE WHEN e.originator_version > 1 THEN (SELECT {head} FROM {table} p "
        "WHERE p.originator_id = e.originator_id AND p.originator_version = e.originator_version - 1) END "
        f"FROM {table} e WHERE e.{column} >= {mark} AND e.{column} < {mark} ORDER BY e.{column}"
    )
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor() if sqlite else raw.cursor(binary=True)
        if not sqlite:
            # The planner over-estimates the lookups (most never run), and compiling the plan would cost
            # more than running it.
            raw.execute("SET LOCAL jit = off")
        try:
            cursor.execute(sql, (start, stop))
            if sqlite:
                for nid, aggregate_id, version, topic, state, previous in cursor:
                    yield (
                        int(nid),
                        _aggregate_id(aggregate_id),
                        int(version),
                        topic,
                        bytes(state),
                        None if previous is None else bytes(previous),
                    )
            else:
                yield from cursor
        finally:
            cursor.close()
            if not sqlite:
                raw.rollback()  # ends the cursor's transaction


def _stored_hash(head: bytes | None) -> str | None:
    """The hash a stored record's header names ("" when unreadable; None for no record)."""
    if head is None:
        return None
    try:
        return record_hash(head)
    except Exception:
        return ""


_worker_engine: Engine | None = None


def _engine_of(settings_json: str) -> Engine:
    global _worker_engine
    if _worker_engine is None:
        _worker_engine = create_engine(Settings.model_validate_json(settings_json), poolclass=sa.NullPool)
    return _worker_engine


def _link_of_failed(nid: int, aggregate_id: str, version: int, record: bytes) -> tuple[int, str, int, str, str]:
    """The link of an event that failed its check, kept in the sequence so later checks do not cascade."""
    try:
        sealed = SealedEvent.from_record(record)
        prev = json.loads(sealed.envelope).get("prev_hash", "")
        return (nid, aggregate_id, version, sealed.hash, str(prev))
    except Exception:
        return (nid, aggregate_id, version, "", "")


def _verify_range(
    settings_json: str, start: int, stop: int, keys: dict[str, bytes], windows: dict[str, KeyWindow]
) -> tuple[list[tuple[int, str, int, str, str]], list[Finding]]:
    """Worker: check every event with start <= notification id < stop.

    The links go back as plain tuples (fields of :class:`EventLink`): pickling
    named tuples costs several times more.
    """
    engine = _engine_of(settings_json)

    def verify(key_id: str, signature: bytes, message: bytes) -> bool | None:
        public = keys.get(key_id)
        return None if public is None else verify_raw(public, signature, message)

    links: list[tuple[int, str, int, str, str]] = []
    findings: list[Finding] = []
    for nid, aggregate_id, version, topic, record in _rows(engine, start, stop):
        link, finding = check_event(nid, aggregate_id, version, topic, record, verify, windows)
        if finding is not None:
            findings.append(finding)
            links.append(_link_of_failed(nid, aggregate_id, version, record))
        elif link is not None:
            links.append(tuple(link))  # type: ignore[arg-type]
    return links, findings


@dataclass
class _Checked:
    """What a worker sends back for one range: the links for the leaf check, in order, and what it found."""

    links: list[tuple[int, str, int, str, str]]
    findings: list[Finding]
    first_versions: int
    """Events that begin a chain (version 1, or following a version that is not stored)."""


def _verify_linked_range(
    settings_json: str, start: int, stop: int, keys: dict[str, bytes], windows: dict[str, KeyWindow]
) -> _Checked:
    """Worker: check every event with start <= notification id < stop, and its link to its aggregate's
    previous version (read with it), so no process needs the chains of the whole ledger."""
    engine = _engine_of(settings_json)

    def verify(key_id: str, signature: bytes, message: bytes) -> bool | None:
        public = keys.get(key_id)
        return None if public is None else verify_raw(public, signature, message)

    checked = _Checked([], [], 0)
    for nid, aggregate_id, version, topic, record, previous in _linked_rows(engine, start, stop):
        link, finding = check_event(nid, aggregate_id, version, topic, record, verify, windows)
        if previous is None:
            checked.first_versions += 1
        if finding is not None:
            checked.findings.append(finding)
            checked.links.append(_link_of_failed(nid, aggregate_id, version, record))
            continue
        assert link is not None
        broken = check_link(link, _stored_hash(previous))
        if broken is not None:
            checked.findings.append(broken)
        checked.links.append(tuple(link))  # type: ignore[arg-type]
    return checked


def trusted_keys(engine: Engine, anchors: list[bytes]) -> tuple[LedgerKeys, list[Finding]]:
    """Follow the key chain from the genesis event (keys and their windows); check an anchor is part of it."""
    query = sa.text(
        f"{events_select(engine)} WHERE topic IN :topics ORDER BY {notification_id_column(engine)}"
    ).bindparams(sa.bindparam("topics", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(query, {"topics": list(KEYRING_TOPICS)}).all()
    events = [(int(n), _aggregate_id(o), int(v), t, bytes(s)) for n, o, v, t, s in rows]
    findings: list[Finding] = [
        Finding(nid, aggregate_id, version, "a key event outside the ledger keyring")
        for nid, aggregate_id, version, _, _ in events
        if aggregate_id != str(KEYRING_ID)
    ]
    found, problem = follow_keyring(events)
    if problem is not None:
        findings.append(problem)
    if not events:
        findings.append(Finding(UNPLACED, "-", 0, "the ledger has no keyring (no genesis key)"))
    elif anchors and not any(a in found.keys.values() for a in anchors):
        findings.append(Finding(UNPLACED, "-", 0, "none of the trusted public keys is part of this ledger's key chain"))
    return found, findings


def key_windows(engine: Engine) -> dict[str, KeyWindow]:
    """The window of each ledger key, followed from the keyring's own events (read by aggregate id)."""
    rows = read_events(engine, [KEYRING_ID])
    found, problem = follow_keyring([(r.position, r.aggregate_id, r.version, r.topic, r.record) for r in rows])
    if problem is not None:
        log.error("ledger keyring does not verify: %s", problem.describe())
    return found.windows


def _ranges(engine: Engine, workers: int, after: int = 0) -> list[tuple[int, int]]:
    """Ranges of notification ids (after ``after``) for the workers to verify."""
    column = notification_id_column(engine)
    with engine.connect() as conn:
        low, high = conn.execute(
            sa.text(f"SELECT MIN({column}), MAX({column}) FROM {events_table(engine)} WHERE {column} > :after"),  # noqa: S608
            {"after": after},
        ).one()
    if low is None:
        return []
    # About four ranges per worker keeps every core busy to the end, small ledgers included.
    span = int(high) - int(low) + 1
    chunk = max(MIN_CHUNK, min(CHUNK, -(-span // (workers * 4))))
    return [(start, min(start + chunk, high + 1)) for start in range(int(low), int(high) + 1, chunk)]


def _raw_rows(engine: Engine, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` through the driver's own cursor (binary on PostgreSQL); ``%s`` marks parameters."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor() if sqlite else raw.cursor(binary=True)
        try:
            cursor.execute(sql.replace("%s", "?") if sqlite else sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def _load_leaves(engine: Engine, first: int = 0) -> list[Leaf]:
    """The log's leaves from leaf index ``first`` on, in order."""
    rows = _raw_rows(
        engine,
        "SELECT leaf_index, notification_id, aggregate_id, version, leaf_hash FROM tlog_leaves "
        "WHERE leaf_index >= %s ORDER BY leaf_index",
        (first,),
    )
    return [Leaf(int(a), int(b), c, int(d), bytes(e)) for a, b, c, d, e in rows]


def _load_nodes(engine: Engine, first_leaf: int = 0) -> dict[tuple[int, int], bytes]:
    """The stored Merkle nodes that cover a leaf at index ``first_leaf`` or later."""
    rows = _raw_rows(
        engine,
        "SELECT level, node_index, hash FROM tlog_nodes WHERE ((node_index + 1) << level) > %s",
        (first_leaf,),
    )
    return {(int(a), int(b)): bytes(c) for a, b, c in rows}


def check_checkpoints(
    engine: Engine,
    origin: str,
    keys: dict[str, bytes],
    root_at: Callable[[int], bytes],
    leaf_count: int,
    from_size: int = 0,
) -> tuple[list[Finding], int, StoredCheckpoint | None]:
    """Every stored checkpoint of at least ``from_size`` leaves is signed by a ledger key and its root is
    ``root_at(its size)``; return the findings, how many were checked and the latest that passed."""
    findings: list[Finding] = []
    with engine.connect() as conn:
        checkpoints = [cp for cp in tlog.all_checkpoints(conn) if cp.tree_size >= from_size]
    latest = None
    for cp in checkpoints:
        where = f"checkpoint at tree size {cp.tree_size}"
        raw = keys.get(cp.key_id)
        if raw is None:
            findings.append(Finding(UNPLACED, "-", 0, f"{where} is signed by unknown key {cp.key_id}"))
            continue
        try:
            parsed = verify_checkpoint(cp.note, origin, Ed25519PublicKey.from_public_bytes(raw))
        except CheckpointError as exc:
            findings.append(Finding(UNPLACED, "-", 0, f"{where}: {exc}"))
            continue
        if parsed.tree_size != cp.tree_size or parsed.root_hash != cp.root_hash:
            findings.append(Finding(UNPLACED, "-", 0, f"{where}: the stored size or root differs from the signed note"))
            continue
        if cp.tree_size > leaf_count:
            findings.append(
                Finding(
                    UNPLACED,
                    "-",
                    0,
                    f"{where} covers {cp.tree_size} leaves but the log has {leaf_count}: "
                    f"logged events after leaf {leaf_count} were removed",
                )
            )
            continue
        if root_at(cp.tree_size) != cp.root_hash:
            findings.append(Finding(UNPLACED, "-", 0, f"{where}: its root is not the root of the log at that size"))
            continue
        latest = cp
    return findings, len(checkpoints), latest


def state_at(
    origin: str, checkpoint: StoredCheckpoint, last_notification_id: int, frontier: CompactRange
) -> VerifiedState:
    """The state to keep after ``checkpoint`` (whose tree ``frontier`` covers) was verified."""
    return VerifiedState(
        origin=origin,
        tree_size=checkpoint.tree_size,
        root=checkpoint.root_hash,
        key_id=checkpoint.key_id,
        note=checkpoint.note,
        last_notification_id=last_notification_id,
        frontier=frontier,
    )


def _in_order(
    submit: Callable[[int, int], Future[_Checked]], ranges: list[tuple[int, int]], ahead: int
) -> Iterator[_Checked]:
    """The workers' results in ledger order, with at most ``ahead`` ranges submitted and not yet consumed:
    results wait in memory only that far ahead of the leaf check."""
    pending: deque[Future[_Checked]] = deque()
    upcoming = iter(ranges)
    for start, stop in islice(upcoming, ahead):
        pending.append(submit(start, stop))
    while pending:
        result = pending.popleft().result()
        following = next(upcoming, None)
        if following is not None:
            pending.append(submit(*following))
        yield result


def verify_ledger(settings: Settings, anchors: list[bytes] | None = None, workers: int | None = None) -> Report:
    """Verify everything; return a report (``report.ok`` tells the verdict).

    Events, leaves and nodes are read as streams (ranges, pages), so memory stays
    bounded however long the ledger is: workers check each event and its link
    to the version before it; this process checks the leaves against the events
    in step and folds them into the tree (:mod:`service.ops.verify_tree`).
    """
    started = time.perf_counter()
    report = Report()
    engine = create_engine(settings)
    try:
        found, key_findings = trusted_keys(engine, anchors or [])
        keys = found.keys
        report.findings += key_findings
        report.keys = sorted(keys)
        report.windows = found.windows
        workers = workers or os.cpu_count() or 1
        ranges = _ranges(engine, workers)
        settings_json = settings.model_dump_json()
        with engine.connect() as conn:
            sizes = {cp.tree_size for cp in tlog.all_checkpoints(conn)}

        def rows(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return _raw_rows(engine, sql, params)

        tree = TreeCheck(rows, sizes)

        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:

            def submit(start: int, stop: int) -> Future[_Checked]:
                return pool.submit(_verify_linked_range, settings_json, start, stop, keys, found.windows)

            def links() -> Iterator[EventLink]:
                for checked in _in_order(submit, ranges, 2 * workers):
                    report.findings += checked.findings
                    report.events += len(checked.links)
                    report.aggregates += checked.first_versions
                    yield from map(EventLink._make, checked.links)

            def leaves() -> Iterator[Leaf]:
                for leaf in stream_leaves(rows):
                    tree.add(leaf.leaf_hash)
                    report.leaves += 1
                    yield leaf

            event_stream, leaf_stream = links(), leaves()
            report.findings += check_leaves(event_stream, leaf_stream)
            for _ in event_stream:  # the rest is read for its counts and the workers' findings
                pass
            for _ in leaf_stream:  # and for the tree
                pass
        report.unlogged = max(0, report.events - report.leaves)
        (top,) = _raw_rows(engine, "SELECT max(level) FROM tlog_nodes")[0]
        report.findings += tree.finish(None if top is None else int(top))
        cp_findings, report.checkpoints, latest = check_checkpoints(
            engine, settings.log_origin, keys, lambda size: tree.roots.get(size, b""), report.leaves
        )
        report.findings += cp_findings
        if latest is not None:
            report.latest_checkpoint = latest.note
            report.state = _state_of(engine, settings.log_origin, latest)
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


def _state_of(engine: Engine, origin: str, latest: StoredCheckpoint) -> VerifiedState | None:
    """The state after ``latest``, read from the stored nodes (which verification found equal to the
    recomputed ones when the report is clean; the state is kept only then)."""
    needed = merkle.nodes_needed_for_root(latest.tree_size)
    with engine.connect() as conn:
        nodes = tlog.fetch_nodes(conn, needed)
    last = _raw_rows(engine, "SELECT notification_id FROM tlog_leaves WHERE leaf_index = %s", (latest.tree_size - 1,))
    if not last or any(node not in nodes for node in needed):
        return None
    try:
        frontier = CompactRange(latest.tree_size, [(lv, ix, nodes[(lv, ix)]) for lv, ix in needed])
    except ValueError:
        return None
    return state_at(origin, latest, int(last[0][0]), frontier)
