"""The transparency log: every event hash, in notification order, as a leaf of an
RFC 9162 Merkle tree, with signed checkpoints in the C2SP tlog-checkpoint format.

The tree is stored as its complete nodes (``tlog_nodes``), so an append costs
O(1) amortised hashes and a root or proof reads O(log n) nodes in one query.
Leaves and nodes are a pure function of the log and are rebuilt like any read
model; checkpoints are published statements and survive a rebuild (``mlledger
verify`` checks them against the rebuilt tree).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.integrity import merkle
from domain.integrity.checkpoint import Checkpoint, sign_checkpoint
from domain.integrity.keys import SigningKey
from domain.integrity.sealing import format_timestamp
from projections.base import ProjectedEvent, Projection, insert_rows
from projections.tables import metadata

tlog_leaves = sa.Table(
    "tlog_leaves",
    metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("notification_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
)

tlog_nodes = sa.Table(
    "tlog_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("node_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

tlog_checkpoints = sa.Table(
    "tlog_checkpoints",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("published_at", sa.String(32), nullable=False),
)

tlog_cosignatures = sa.Table(
    "tlog_cosignatures",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness_vkey", sa.String(300), primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("cosigned_at", sa.BigInteger, nullable=False),
)
"""Witness cosignatures (C2SP cosignature/v1 note lines) on published checkpoints, checked before storing."""


def event_leaf_hash(event_hash_hex: str) -> bytes:
    """The Merkle leaf of an event: sha256(0x00 || raw event hash)."""
    return merkle.leaf_hash(bytes.fromhex(event_hash_hex))


class TransparencyLog(Projection):
    """Appends each event hash as the next Merkle leaf."""

    name = "transparency_log"
    tables = (tlog_leaves, tlog_nodes)

    def __init__(self) -> None:
        self._range = merkle.CompactRange()
        self._leaf_rows: list[dict[str, object]] = []
        self._node_rows: list[dict[str, object]] = []

    def begin_batch(self, conn: Connection) -> None:
        """Load the tree's right frontier (O(log n) nodes)."""
        size = tree_size(conn)
        nodes = fetch_nodes(conn, merkle.nodes_needed_for_root(size))
        self._range = merkle.CompactRange.from_nodes(size, lambda lv, ix: nodes[(lv, ix)])
        self._leaf_rows = []
        self._node_rows = []

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Append the event's leaf and remember the nodes it completes."""
        leaf = event_leaf_hash(event.hash)
        self._leaf_rows.append(
            {
                "leaf_index": self._range.size,
                "notification_id": event.notification_id,
                "aggregate_id": event.aggregate_id,
                "version": event.version,
                "leaf_hash": leaf,
            }
        )
        for level, index, digest in self._range.append(leaf):
            self._node_rows.append({"level": level, "node_index": index, "hash": digest})

    def end_batch(self, conn: Connection) -> None:
        """Write the batch's leaves and nodes."""
        if self._leaf_rows:
            insert_rows(conn, tlog_leaves, self._leaf_rows)
            insert_rows(conn, tlog_nodes, self._node_rows)


# -- queries ---------------------------------------------------------------


def tree_size(conn: Connection) -> int:
    """Number of leaves in the log."""
    top = conn.execute(sa.select(sa.func.max(tlog_leaves.c.leaf_index))).scalar()
    return 0 if top is None else int(top) + 1


def fetch_nodes(conn: Connection, ids: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored nodes with the given (level, index) ids, in one query."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    found: dict[tuple[int, int], bytes] = {}
    for start in range(0, len(wanted), 200):
        chunk = wanted[start : start + 200]
        rows = conn.execute(
            sa.select(tlog_nodes.c.level, tlog_nodes.c.node_index, tlog_nodes.c.hash).where(
                sa.tuple_(tlog_nodes.c.level, tlog_nodes.c.node_index).in_(chunk)
            )
        )
        for level, index, digest in rows:
            found[(int(level), int(index))] = bytes(digest)
    missing = [node for node in wanted if node not in found]
    if missing:
        raise LookupError(f"transparency log nodes missing: {missing[:3]}")
    return found


def root_at(conn: Connection, size: int) -> bytes:
    """Root hash of the first ``size`` leaves."""
    nodes = fetch_nodes(conn, merkle.nodes_needed_for_root(size))
    return merkle.root_from_nodes(size, lambda lv, ix: nodes[(lv, ix)])


def inclusion_proof(conn: Connection, leaf_index: int, size: int) -> list[bytes]:
    """Audit path of ``leaf_index`` in the tree of ``size`` leaves."""
    nodes = fetch_nodes(conn, merkle.nodes_needed_for_inclusion(leaf_index, size))
    return merkle.inclusion_proof_from_nodes(leaf_index, size, lambda lv, ix: nodes[(lv, ix)])


def consistency_proof(conn: Connection, old_size: int, new_size: int) -> list[bytes]:
    """Proof that the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    nodes = fetch_nodes(conn, merkle.nodes_needed_for_consistency(old_size, new_size))
    return merkle.consistency_proof_from_nodes(old_size, new_size, lambda lv, ix: nodes[(lv, ix)])


@dataclass(frozen=True)
class LeafRecord:
    """Where an event sits in the log."""

    leaf_index: int
    notification_id: int
    aggregate_id: str
    version: int
    leaf_hash: bytes


def leaf_for_notification(conn: Connection, notification_id: int) -> LeafRecord | None:
    """The leaf of the event with ``notification_id``, if logged yet."""
    row = conn.execute(sa.select(tlog_leaves).where(tlog_leaves.c.notification_id == notification_id)).first()
    if row is None:
        return None
    return LeafRecord(
        int(row.leaf_index),
        int(row.notification_id),
        row.aggregate_id,
        int(row.version),
        bytes(row.leaf_hash),
    )


@dataclass(frozen=True)
class StoredCheckpoint:
    """A published checkpoint as stored."""

    tree_size: int
    root_hash: bytes
    key_id: str
    note: str
    published_at: str


def _checkpoint(row: sa.Row[tuple[object, ...]]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row.tree_size), bytes(row.root_hash), row.key_id, row.note, row.published_at)


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    """The checkpoint with the largest tree size."""
    row = conn.execute(sa.select(tlog_checkpoints).order_by(tlog_checkpoints.c.tree_size.desc()).limit(1)).first()
    return None if row is None else _checkpoint(row)


def checkpoint_at(conn: Connection, size: int) -> StoredCheckpoint | None:
    """The checkpoint for exactly ``size`` leaves, if one was published."""
    row = conn.execute(sa.select(tlog_checkpoints).where(tlog_checkpoints.c.tree_size == size)).first()
    return None if row is None else _checkpoint(row)


def all_checkpoints(conn: Connection) -> list[StoredCheckpoint]:
    """Every published checkpoint, oldest first."""
    rows = conn.execute(sa.select(tlog_checkpoints).order_by(tlog_checkpoints.c.tree_size))
    return [_checkpoint(row) for row in rows]


def checkpoint_due(conn: Connection, *, every_events: int, every_seconds: float, now: datetime) -> bool:
    """True when the log grew by ``every_events`` or grew at all ``every_seconds`` ago."""
    size = tree_size(conn)
    latest = latest_checkpoint(conn)
    if latest is None:
        return size > 0
    grown = size - latest.tree_size
    if grown <= 0:
        return False
    if grown >= every_events:
        return True
    published = datetime.fromisoformat(latest.published_at.replace("Z", "+00:00"))
    return (now - published).total_seconds() >= every_seconds


def publish_checkpoint(conn: Connection, signer: SigningKey, origin: str, now: datetime) -> StoredCheckpoint | None:
    """Sign and store a checkpoint of the current tree; None if nothing new to sign."""
    size = tree_size(conn)
    latest = latest_checkpoint(conn)
    if size == 0 or (latest is not None and latest.tree_size >= size):
        return None
    root = root_at(conn, size)
    note = sign_checkpoint(Checkpoint(origin=origin, tree_size=size, root_hash=root), origin, signer.note_key)
    stored = StoredCheckpoint(size, root, signer.key_id, note, format_timestamp(now))
    conn.execute(
        tlog_checkpoints.insert().values(
            tree_size=stored.tree_size,
            root_hash=stored.root_hash,
            key_id=stored.key_id,
            note=stored.note,
            published_at=stored.published_at,
        )
    )
    return stored
