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
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
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
from domain.integrity.sealing import SealedEvent
from domain.integrity.verification import (
    UNPLACED,
    EventLink,
    Finding,
    Leaf,
    LedgerKeys,
    check_chains,
    check_event,
    check_leaves,
    check_nodes,
    complete_levels,
    follow_keyring,
)
from projections import transparency_log as tlog
from projections.transparency_log import StoredCheckpoint
from service.ops.verified_state import VerifiedState
from service.settings import Settings
from service.store.persistence import create_engine, events_select, events_table, notification_id_column, read_events

log = logging.getLogger(__name__)

CHUNK = 20_000
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


_worker_engine: Engine | None = None


def _verify_range(
    settings_json: str, start: int, stop: int, keys: dict[str, bytes], windows: dict[str, KeyWindow]
) -> tuple[list[tuple[int, str, int, str, str]], list[Finding]]:
    """Worker: check every event with start <= notification id < stop.

    The links go back as plain tuples (fields of :class:`EventLink`): pickling
    named tuples costs several times more.
    """
    global _worker_engine
    if _worker_engine is None:
        _worker_engine = create_engine(Settings.model_validate_json(settings_json), poolclass=sa.NullPool)

    def verify(key_id: str, signature: bytes, message: bytes) -> bool | None:
        public = keys.get(key_id)
        return None if public is None else verify_raw(public, signature, message)

    links: list[tuple[int, str, int, str, str]] = []
    findings: list[Finding] = []
    for nid, aggregate_id, version, topic, record in _rows(_worker_engine, start, stop):
        link, finding = check_event(nid, aggregate_id, version, topic, record, verify, windows)
        if finding is not None:
            findings.append(finding)
            # Keep the event in the sequence so later checks do not cascade.
            try:
                sealed = SealedEvent.from_record(record)
                prev = json.loads(sealed.envelope).get("prev_hash", "")
                links.append((nid, aggregate_id, version, sealed.hash, str(prev)))
            except Exception:
                links.append((nid, aggregate_id, version, "", ""))
        elif link is not None:
            links.append(tuple(link))  # type: ignore[arg-type]
    return links, findings


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


def _load_levels(engine: Engine) -> list[list[bytes]] | None:
    """The stored Merkle nodes level by level, or None when some level has gaps (then compared node by node).

    PostgreSQL sends each level as one array: a row per node costs more than the hashing.
    """
    if engine.dialect.name == "sqlite":
        levels: list[list[bytes]] = []
        for level, index, digest in _raw_rows(engine, "SELECT level, node_index, hash FROM tlog_nodes ORDER BY 1, 2"):
            if level == len(levels) and index == 0:
                levels.append([bytes(digest)])
            elif level == len(levels) - 1 and index == len(levels[-1]):
                levels[-1].append(bytes(digest))
            else:
                return None
        return levels
    grouped = _raw_rows(
        engine,
        "SELECT level, min(node_index), max(node_index), count(*), array_agg(hash ORDER BY node_index) "
        "FROM tlog_nodes GROUP BY level ORDER BY level",
    )
    found: list[list[bytes]] = []
    for level, low, high, count, hashes in grouped:
        if level != len(found) or low != 0 or high != count - 1:
            return None
        found.append(list(hashes))
    return found


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


def verify_ledger(settings: Settings, anchors: list[bytes] | None = None, workers: int | None = None) -> Report:
    """Verify everything; return a report (``report.ok`` tells the verdict)."""
    started = time.perf_counter()
    report = Report()
    engine = create_engine(settings)
    try:
        found, key_findings = trusted_keys(engine, anchors or [])
        keys = found.keys
        report.findings += key_findings
        report.keys = sorted(keys)
        report.windows = found.windows
        links: list[EventLink] = []
        workers = workers or os.cpu_count() or 1
        ranges = _ranges(engine, workers)
        settings_json = settings.model_dump_json()
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
            futures = [pool.submit(_verify_range, settings_json, a, b, keys, found.windows) for a, b in ranges]
            leaves = _load_leaves(engine)
            stored_levels = _load_levels(engine)
            levels = complete_levels([leaf.leaf_hash for leaf in leaves])
            for future in futures:
                chunk_links, chunk_findings = future.result()
                links += map(EventLink._make, chunk_links)
                report.findings += chunk_findings
        report.events = len(links)
        report.aggregates = len({link.aggregate_id for link in links})
        report.findings += check_chains(links)
        report.leaves = len(leaves)
        report.unlogged = max(0, len(links) - len(leaves))
        report.findings += check_leaves(links, leaves)
        if stored_levels != levels:
            expected_nodes = {(lv, ix): digest for lv, row in enumerate(levels) for ix, digest in enumerate(row)}
            report.findings += check_nodes(expected_nodes, _load_nodes(engine), leaves)
        cp_findings, report.checkpoints, latest = check_checkpoints(
            engine,
            settings.log_origin,
            keys,
            lambda size: merkle.root_from_nodes(size, lambda lv, ix: levels[lv][ix]),
            len(leaves),
        )
        report.findings += cp_findings
        if latest is not None:
            report.latest_checkpoint = latest.note
            frontier = [(lv, ix, levels[lv][ix]) for lv, ix in merkle.nodes_needed_for_root(latest.tree_size)]
            report.state = state_at(
                settings.log_origin,
                latest,
                leaves[latest.tree_size - 1].notification_id,
                CompactRange(latest.tree_size, frontier),
            )
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report
