"""The ledger itself: checkpoints, keys, sealed events and Merkle proofs.

These are the endpoints a verifier needs; hashes are hex, the checkpoint note is
the C2SP signed-note text exactly as signed. Checkpoints, keys and proofs are
public verification material (they reveal hashes only, like a Certificate
Transparency log); the events themselves need a role that may read them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from domain.errors import NotFound
from projections import transparency_log as tlog
from service.api.deps import ConnDep, LedgerEventReader, ServicesDep
from service.api.errors import ProofRangeError
from service.ops import witnessing
from service.ops.verify import key_windows
from service.store.event_store import open_record

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])


class CheckpointPublic(BaseModel):
    """A signed checkpoint of the transparency log."""

    origin: str
    tree_size: int
    root_hash: str = Field(description="hex")
    key_id: str
    published_at: str
    note: str = Field(description="C2SP tlog-checkpoint signed note: the ledger's signature, then witness cosignatures")
    cosigners: list[str] = Field(default_factory=list, description="witnesses (policy names) that cosigned it")
    witnessed: bool | None = Field(None, description="whether the cosigners meet the witness policy; null: no policy")


class KeyPublic(BaseModel):
    """A ledger signing key and its window: the ledger positions at which it may sign."""

    key_id: str
    public_key_pem: str
    current: bool
    introduced_at: int | None = Field(
        None, description="position of the keyring event that introduced it (the genesis event or a rotation)"
    )
    signs_from: int | None = Field(None, description="the first position it may sign (its window opens)")
    retired_at: int | None = Field(
        None, description="position of the rotation that retired it, its last signature; null while current"
    )
    compromised_since: int | None = Field(
        None, description="recorded by a revocation: what it signed after this position is not trusted"
    )
    revoked_at: int | None = Field(None, description="position of the revocation event")


class EventPublic(BaseModel):
    """A stored event with its seal."""

    notification_id: int
    envelope: dict[str, Any]
    hash: str
    signature: str
    key_id: str
    leaf_index: int | None = Field(None, description="position in the transparency log, once logged")


class InclusionProofPublic(BaseModel):
    """Audit path from an event's leaf to the root of a tree size."""

    notification_id: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]
    checkpoint: str | None = Field(None, description="the signed checkpoint of this size, if any")


class ConsistencyProofPublic(BaseModel):
    """Proof that an older tree is a prefix of a newer one."""

    from_size: int
    to_size: int
    from_root: str
    to_root: str
    proof: list[str]


def _checkpoint_public(services: ServicesDep, view: witnessing.CosignedCheckpoint, policy: bool) -> CheckpointPublic:
    cp = view.checkpoint
    return CheckpointPublic(
        origin=services.settings.log_origin,
        tree_size=cp.tree_size,
        root_hash=cp.root_hash.hex(),
        key_id=cp.key_id,
        published_at=cp.published_at,
        note=view.note,
        cosigners=view.cosigners,
        witnessed=view.witnessed if policy else None,
    )


@router.get("/checkpoint", response_model=CheckpointPublic)
def latest_checkpoint(
    services: ServicesDep,
    conn: ConnDep,
    witnessed: Annotated[bool, Query(description="the newest checkpoint that meets the witness policy")] = False,
) -> CheckpointPublic:
    """The newest signed checkpoint, with the witnesses' cosignatures appended to its note."""
    policy = witnessing.witness_policy(services.settings)
    if witnessed:
        if policy is None:
            raise NotFound("this ledger has no witnesses configured", field="witnessed")
        view = witnessing.latest_witnessed(conn, policy)
        if view is None:
            raise NotFound("no checkpoint has been witnessed by the policy's quorum yet", field="witnessed")
        return _checkpoint_public(services, view, True)
    cp = tlog.latest_checkpoint(conn)
    if cp is None:
        raise NotFound("no checkpoint has been published yet")
    return _checkpoint_public(services, witnessing.cosigned(conn, cp, policy), policy is not None)


@router.get("/keys", response_model=list[KeyPublic])
def ledger_keys(services: ServicesDep) -> list[KeyPublic]:
    """Every key that has signed this ledger, the current one marked, each with its window of positions."""
    keyring = services.ledger.keyring()
    if keyring is None:
        return []
    windows = key_windows(services.engine)
    genesis = min(windows.values(), key=lambda w: w.first).key_id if windows else None
    keys = []
    for kid, pem in keyring.keys.items():
        window = windows.get(kid)
        keys.append(
            KeyPublic(
                key_id=kid,
                public_key_pem=pem,
                current=kid == keyring.current_key_id,
                introduced_at=None if window is None else window.first - (0 if kid == genesis else 1),
                signs_from=None if window is None else window.first,
                retired_at=None if window is None else window.last,
                compromised_since=None if window is None else window.compromised_since,
                revoked_at=None if window is None else window.revoked_at,
            )
        )
    return keys


@router.get("/events/{notification_id}", response_model=EventPublic)
def ledger_event(
    services: ServicesDep,
    conn: ConnDep,
    caller: LedgerEventReader,
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
) -> EventPublic:
    """One sealed event by its position in the ledger."""
    found = services.ledger.recorder.select_notifications(notification_id, 1)
    if not found or found[0].id != notification_id:
        raise NotFound(f"no event at notification id {notification_id}", field="notification_id")
    sealed, envelope = open_record(found[0])
    leaf = tlog.leaf_for_notification(conn, notification_id)
    return EventPublic(
        notification_id=notification_id,
        envelope=envelope,
        hash=sealed.hash,
        signature=sealed.signature,
        key_id=sealed.key_id,
        leaf_index=None if leaf is None else leaf.leaf_index,
    )


@router.get("/proofs/inclusion", response_model=InclusionProofPublic)
def inclusion(
    conn: ConnDep,
    notification_id: Annotated[int, Query(ge=1, le=2**62)],
    tree_size: Annotated[int | None, Query(ge=1, le=2**62, description="default: the latest checkpoint")] = None,
) -> InclusionProofPublic:
    """Inclusion proof of an event in the tree of ``tree_size`` leaves."""
    leaf = tlog.leaf_for_notification(conn, notification_id)
    if leaf is None:
        raise NotFound(f"event {notification_id} is not in the transparency log (yet)", field="notification_id")
    size = tlog.tree_size(conn)
    if tree_size is None:
        latest = tlog.latest_checkpoint(conn)
        tree_size = latest.tree_size if latest and latest.tree_size > leaf.leaf_index else size
    if not leaf.leaf_index < tree_size <= size:
        raise ProofRangeError(f"tree_size must be in ({leaf.leaf_index}, {size}] for this event", field="tree_size")
    proof = tlog.inclusion_proof(conn, leaf.leaf_index, tree_size)
    checkpoint = tlog.checkpoint_at(conn, tree_size)
    return InclusionProofPublic(
        notification_id=notification_id,
        leaf_index=leaf.leaf_index,
        tree_size=tree_size,
        leaf_hash=leaf.leaf_hash.hex(),
        root_hash=tlog.root_at(conn, tree_size).hex(),
        proof=[p.hex() for p in proof],
        checkpoint=None if checkpoint is None else checkpoint.note,
    )


@router.get("/proofs/consistency", response_model=ConsistencyProofPublic)
def consistency(
    conn: ConnDep,
    from_size: Annotated[int, Query(alias="from", ge=1, le=2**62)],
    to_size: Annotated[int, Query(alias="to", ge=1, le=2**62)],
) -> ConsistencyProofPublic:
    """Consistency proof between two tree sizes."""
    size = tlog.tree_size(conn)
    if not from_size <= to_size <= size:
        raise ProofRangeError(f"need 1 <= from <= to <= {size} (the log's size)", field="to")
    return ConsistencyProofPublic(
        from_size=from_size,
        to_size=to_size,
        from_root=tlog.root_at(conn, from_size).hex(),
        to_root=tlog.root_at(conn, to_size).hex(),
        proof=[p.hex() for p in tlog.consistency_proof(conn, from_size, to_size)],
    )
