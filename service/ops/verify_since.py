"""``mlledger verify --since-checkpoint``: verify only what the ledger recorded after the last verified checkpoint.

It starts from the state the previous successful run kept
(:mod:`service.ops.verified_state`) and checks, in order:

1. The key chain, as the full run does (it is small).
2. The state itself and its agreement with the ledger: the state's checkpoint
   note is signed by a ledger key and names the state's size and root; the
   state's frontier folds into that root; the ledger still stores that very
   checkpoint, the same frontier nodes and the same last leaf; and exactly as
   many events lie at or before the checkpoint as it has leaves.
3. Every event after the checkpoint, in worker processes as in the full run
   (hash, signature inside its key's window, envelope vs row).
4. Their chains: an aggregate's first new event follows its last event before
   the checkpoint, whose stored hash must be the leaf the verified tree holds
   (an inclusion proof against the verified root), so an older event cannot be
   swapped for another.
5. The log after the checkpoint: its leaves are the new events' hashes in
   order, its nodes are those the verified frontier extended by them gives, and
   every later checkpoint is signed and has the root of the log at its size.

Events before the checkpoint are not checked again one by one; the full run
(``mlledger verify``) does that and remains the reference.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine

from domain.integrity import merkle
from domain.integrity.checkpoint import CheckpointError, verify_checkpoint
from domain.integrity.compact_range import CompactRange
from domain.integrity.sealing import SealedEvent
from domain.integrity.verification import UNPLACED, EventLink, Finding, Leaf, check_chains, check_leaves
from projections import transparency_log as tlog
from service.ops.verified_state import VerifiedState
from service.ops.verify import (
    Report,
    _load_leaves,
    _load_nodes,
    _ranges,
    _raw_rows,
    _verify_range,
    check_checkpoints,
    state_at,
    trusted_keys,
)
from service.settings import Settings
from service.store.persistence import create_engine, events_table, notification_id_column


def _problem(what: str) -> Finding:
    return Finding(UNPLACED, "-", 0, what)


def check_state(engine: Engine, origin: str, state: VerifiedState, keys: dict[str, bytes]) -> list[Finding]:
    """The state is one a verification wrote, and the ledger still agrees with it."""
    if state.origin != origin:
        return [_problem(f"the verified state is of log {state.origin!r}, this ledger's log is {origin!r}")]
    raw = keys.get(state.key_id)
    if raw is None:
        return [_problem(f"the verified state's checkpoint is signed by {state.key_id}, which is not a ledger key")]
    try:
        parsed = verify_checkpoint(state.note, origin, Ed25519PublicKey.from_public_bytes(raw))
    except CheckpointError as exc:
        return [_problem(f"the verified state's checkpoint does not verify: {exc}")]
    if parsed.tree_size != state.tree_size or parsed.root_hash != state.root or state.frontier.root() != state.root:
        return [_problem("the verified state was edited: its size, root and frontier disagree with its checkpoint")]
    with engine.connect() as conn:
        stored = [cp for cp in tlog.all_checkpoints(conn) if cp.tree_size == state.tree_size]
    if not stored or stored[0].note != state.note:
        return [
            _problem(
                f"the checkpoint at tree size {state.tree_size} is not the one verified before: "
                "it was rewritten or removed (the log's history changed)"
            )
        ]
    wanted = {(level, index) for level, index, _ in state.frontier.nodes}
    nodes = _nodes(engine, wanted)
    if any(nodes.get((level, index)) != digest for level, index, digest in state.frontier.nodes):
        return [_problem(f"the transparency log up to tree size {state.tree_size} was rewritten since it was verified")]
    last = _raw_rows(engine, "SELECT notification_id FROM tlog_leaves WHERE leaf_index = %s", (state.tree_size - 1,))
    column = notification_id_column(engine)
    (count,) = _raw_rows(
        engine,
        f"SELECT count(*) FROM {events_table(engine)} WHERE {column} <= %s",  # noqa: S608 - constant names
        (state.last_notification_id,),
    )[0]
    if not last or int(last[0][0]) != state.last_notification_id or int(count) != state.tree_size:
        return [
            _problem(
                f"events at or before the verified checkpoint (notification {state.last_notification_id}) "
                f"were added or removed: {count} events for {state.tree_size} leaves"
            )
        ]
    return []


def _nodes(engine: Engine, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored Merkle nodes among ``wanted``."""
    if not wanted:
        return {}
    pairs = sorted(wanted)
    if engine.dialect.name == "sqlite":
        found: dict[tuple[int, int], bytes] = {}
        for level, index in pairs:
            rows = _raw_rows(engine, "SELECT hash FROM tlog_nodes WHERE level = %s AND node_index = %s", (level, index))
            if rows:
                found[(level, index)] = bytes(rows[0][0])
        return found
    rows = _raw_rows(
        engine,
        "SELECT n.level, n.node_index, n.hash FROM tlog_nodes n "
        "JOIN unnest(%s::smallint[], %s::bigint[]) AS want(level, node_index) "
        "ON n.level = want.level AND n.node_index = want.node_index",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    return {(int(a), int(b)): bytes(c) for a, b, c in rows}


def _predecessors(engine: Engine, wanted: list[tuple[str, int]]) -> dict[str, tuple[int, bytes]]:
    """aggregate id -> (notification id, record) of the wanted (aggregate id, version) events."""
    found: dict[str, tuple[int, bytes]] = {}
    column = notification_id_column(engine)
    table = events_table(engine)
    if engine.dialect.name == "sqlite":
        for aggregate_id, version in wanted:
            rows = _raw_rows(
                engine,
                f"SELECT {column}, state FROM {table} WHERE originator_id = %s AND originator_version = %s",  # noqa: S608
                (aggregate_id.replace("-", ""), version),
            )
            if rows:
                found[aggregate_id] = (int(rows[0][0]), bytes(rows[0][1]))
        return found
    for start in range(0, len(wanted), 5_000):
        chunk = wanted[start : start + 5_000]
        rows = _raw_rows(
            engine,
            f"SELECT e.{column}, e.originator_id::text, e.state FROM {table} e "  # noqa: S608
            "JOIN unnest(%s::uuid[], %s::bigint[]) AS want(id, version) "
            "ON e.originator_id = want.id AND e.originator_version = want.version",
            ([a for a, _ in chunk], [v for _, v in chunk]),
        )
        found.update({str(oid): (int(nid), bytes(state)) for nid, oid, state in rows})
    return found


def chain_heads(
    engine: Engine, links: list[EventLink], state: VerifiedState
) -> tuple[dict[str, tuple[int, str]], list[Finding]]:
    """The verified last event before the checkpoint of every aggregate the new events continue."""
    first: dict[str, EventLink] = {}
    for link in links:
        known = first.get(link.aggregate_id)
        if known is None or link.version < known.version:
            first[link.aggregate_id] = link
    continuing = [link for link in first.values() if link.version > 1]
    rows = _predecessors(engine, [(link.aggregate_id, link.version - 1) for link in continuing])
    heads: dict[str, tuple[int, str]] = {}
    findings: list[Finding] = []
    hashes: dict[int, tuple[EventLink, str]] = {}
    for link in continuing:
        row = rows.get(link.aggregate_id)
        sealed = None if row is None else _sealed(row[1])
        if row is None or sealed is None or row[0] > state.last_notification_id:
            findings.append(
                Finding(*link[:3], f"version {link.version - 1}, which this event follows, is missing or malformed")
            )
            heads[link.aggregate_id] = (link.version - 1, link.prev_hash)  # reported once, not again as a gap
            continue
        heads[link.aggregate_id] = (link.version - 1, sealed.hash)
        hashes[row[0]] = (link, sealed.hash)
    findings += _logged_before(engine, hashes, state)
    return heads, findings


def _sealed(record: bytes) -> SealedEvent | None:
    try:
        sealed = SealedEvent.from_record(record)
    except Exception:
        return None
    return sealed if sealed.hash_matches() else None


def _logged_before(engine: Engine, hashes: dict[int, tuple[EventLink, str]], state: VerifiedState) -> list[Finding]:
    """Each (notification id -> event hash) is the leaf the verified tree holds for that event."""
    leaves: dict[int, tuple[int, bytes]] = {}
    ids = sorted(hashes)
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        marks = ",".join(["%s"] * len(chunk))
        rows = _raw_rows(
            engine,
            f"SELECT notification_id, leaf_index, leaf_hash FROM tlog_leaves WHERE notification_id IN ({marks})",  # noqa: S608
            tuple(chunk),
        )
        leaves.update({int(n): (int(i), bytes(h)) for n, i, h in rows})
    needed = {node for nid in leaves for node in merkle.nodes_needed_for_inclusion(leaves[nid][0], state.tree_size)}
    nodes = _nodes(engine, needed)
    findings = []
    for nid, (link, event_hash) in sorted(hashes.items()):
        leaf = leaves.get(nid)
        expected = merkle.leaf_hash(bytes.fromhex(event_hash))
        included = False
        if leaf is not None and leaf[1] == expected and leaf[0] < state.tree_size:
            try:
                proof = merkle.inclusion_proof_from_nodes(leaf[0], state.tree_size, lambda lv, ix: nodes[(lv, ix)])
                included = merkle.verify_inclusion(expected, leaf[0], state.tree_size, proof, state.root)
            except (KeyError, ValueError):
                included = False
        if not included:
            findings.append(
                Finding(
                    *link[:3],
                    f"version {link.version - 1}, which this event follows, is not the event the verified "
                    f"checkpoint at tree size {state.tree_size} logged (history before it was rewritten)",
                )
            )
    return findings


def _extend(
    state: VerifiedState, leaves: list[Leaf], sizes: set[int]
) -> tuple[dict[tuple[int, int], bytes], dict[int, bytes], dict[int, CompactRange]]:
    """The nodes the new leaves complete, the roots at ``sizes`` and the frontiers there."""
    frontier = CompactRange(state.frontier.size, list(state.frontier.nodes))
    made: dict[tuple[int, int], bytes] = {}
    roots = {state.tree_size: state.root}
    frontiers: dict[int, CompactRange] = {}
    for leaf in leaves:
        for level, index, digest in frontier.append(leaf.leaf_hash):
            made[(level, index)] = digest
        if frontier.size in sizes:
            roots[frontier.size] = frontier.root()
            frontiers[frontier.size] = CompactRange(frontier.size, list(frontier.nodes))
    return made, roots, frontiers


def _node_findings(made: dict[tuple[int, int], bytes], stored: dict[tuple[int, int], bytes]) -> list[Finding]:
    if made == stored:
        return []
    level, index = min(set(made) ^ set(stored) | {n for n in made if stored.get(n) != made[n]})
    return [_problem(f"transparency log node (level {level}, index {index}) after the verified checkpoint differs")]


def verify_since_checkpoint(
    settings: Settings, state: VerifiedState, anchors: list[bytes] | None = None, workers: int | None = None
) -> Report:
    """Verify what was recorded after ``state``'s checkpoint; return a report (``report.ok`` tells the verdict)."""
    started = time.perf_counter()
    report = Report(since=state.tree_size)
    engine = create_engine(settings)
    try:
        found, key_findings = trusted_keys(engine, anchors or [])
        report.findings += key_findings
        report.keys, report.windows = sorted(found.keys), found.windows
        report.findings += check_state(engine, settings.log_origin, state, found.keys)
        if report.findings:
            return report
        workers = workers or os.cpu_count() or 1
        ranges = _ranges(engine, workers, after=state.last_notification_id)
        settings_json = settings.model_dump_json()
        links: list[EventLink] = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
            futures = [pool.submit(_verify_range, settings_json, a, b, found.keys, found.windows) for a, b in ranges]
            leaves = _load_leaves(engine, first=state.tree_size)
            stored_nodes = _load_nodes(engine, first_leaf=state.tree_size)
            for future in futures:
                chunk_links, chunk_findings = future.result()
                links += map(EventLink._make, chunk_links)
                report.findings += chunk_findings
        report.events = len(links)
        report.aggregates = len({link.aggregate_id for link in links})
        heads, head_findings = chain_heads(engine, links, state)
        report.findings += head_findings
        report.findings += check_chains(links, heads)
        report.leaves = state.tree_size + len(leaves)
        report.unlogged = max(0, len(links) - len(leaves))
        report.findings += check_leaves(links, leaves, first=state.tree_size)
        with engine.connect() as conn:
            sizes = {cp.tree_size for cp in tlog.all_checkpoints(conn) if cp.tree_size >= state.tree_size}
        made, roots, frontiers = _extend(state, leaves, sizes)
        report.findings += _node_findings(made, stored_nodes)
        cp_findings, report.checkpoints, latest = check_checkpoints(
            engine, settings.log_origin, found.keys, lambda size: roots.get(size, b""), report.leaves, state.tree_size
        )
        report.findings += cp_findings
        if latest is not None:
            report.latest_checkpoint = latest.note
            if latest.tree_size == state.tree_size:
                report.state = state
            else:
                last = leaves[latest.tree_size - state.tree_size - 1].notification_id
                report.state = state_at(settings.log_origin, latest, last, frontiers[latest.tree_size])
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report
