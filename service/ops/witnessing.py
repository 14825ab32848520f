"""Witnessing: the ledger submits its newest checkpoint to its witnesses and keeps their cosignatures.

Configured by ``MLLEDGER_WITNESSES`` (``name=url=vkey,...``) and
``MLLEDGER_WITNESS_POLICY`` (a number k: any k of them; or C2SP tlog-policy
text; empty: all of them). After each projector pass, every witness whose latest
cosignature is older than the newest checkpoint gets that checkpoint with a
consistency proof from the size it cosigned last (C2SP tlog-witness
``add-checkpoint``); a 409 names the size the witness holds and the ledger
retries once from there. A returned cosignature is checked against the
witness's key before it is stored. A witness that is down or refuses is retried
later, with a growing pause: witnessing lags, appends never wait for it. A
checkpoint counts as witnessed when its cosigners meet the policy's quorum.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.integrity.checkpoint import CheckpointFormatError, parse_signed_note
from domain.integrity.cosignature import AddCheckpointRequest, verify_cosignature
from domain.integrity.witness_policy import PolicyWitness, WitnessPolicy, configured_policy
from projections import transparency_log as tlog
from service.bootstrap import Services
from service.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "CosignedCheckpoint",
    "cosigned",
    "latest_witnessed",
    "submit_to_witnesses",
    "witness_policy",
]


@cache
def _policy(witnesses: str, policy: str) -> WitnessPolicy | None:
    return configured_policy(witnesses, policy)


def witness_policy(settings: Settings) -> WitnessPolicy | None:
    """The configured witnesses and quorum; None when the ledger has no witnesses."""
    return _policy(settings.witnesses, settings.witness_policy)


# -- reading cosignatures ------------------------------------------------------


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A checkpoint with the cosignatures stored for it and whether they meet the policy."""

    checkpoint: tlog.StoredCheckpoint
    note: str
    cosigners: list[str]
    witnessed: bool


def _lines_at(conn: Connection, size: int) -> dict[str, str]:
    rows = conn.execute(
        sa.select(tlog.tlog_cosignatures.c.witness_vkey, tlog.tlog_cosignatures.c.line).where(
            tlog.tlog_cosignatures.c.tree_size == size
        )
    )
    return {vkey: line for vkey, line in rows}


def cosigned(conn: Connection, checkpoint: tlog.StoredCheckpoint, policy: WitnessPolicy | None) -> CosignedCheckpoint:
    """``checkpoint``'s note with the stored cosignature lines appended (signed-note order: the log's first)."""
    lines = _lines_at(conn, checkpoint.tree_size)
    names = [] if policy is None else [w.name for w in policy.witnesses.values() if w.cosigner.vkey in lines]
    witnessed = policy is not None and policy.satisfied_by(set(names))
    return CosignedCheckpoint(checkpoint, checkpoint.note + "".join(lines.values()), names, witnessed)


def latest_witnessed(conn: Connection, policy: WitnessPolicy) -> CosignedCheckpoint | None:
    """The newest checkpoint whose cosignatures meet the policy."""
    if policy.satisfied_by(set()):
        latest = tlog.latest_checkpoint(conn)
        return None if latest is None else cosigned(conn, latest, policy)
    sizes = conn.execute(
        sa.select(tlog.tlog_cosignatures.c.tree_size).distinct().order_by(tlog.tlog_cosignatures.c.tree_size.desc())
    ).scalars()
    for size in sizes:
        checkpoint = tlog.checkpoint_at(conn, int(size))
        if checkpoint is not None:
            view = cosigned(conn, checkpoint, policy)
            if view.witnessed:
                return view
    return None


def _latest_cosigned_sizes(conn: Connection) -> dict[str, int]:
    table = tlog.tlog_cosignatures
    rows = conn.execute(sa.select(table.c.witness_vkey, sa.func.max(table.c.tree_size)).group_by(table.c.witness_vkey))
    return {vkey: int(size) for vkey, size in rows}


# -- submitting ----------------------------------------------------------------


class _Pause:
    """Per witness URL: when to try again after a failure (1 s, doubling, at most 30 s)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, tuple[float, float]] = {}

    def ready(self, url: str) -> bool:
        with self._lock:
            until = self._until.get(url)
            return until is None or time.monotonic() >= until[0]

    def failed(self, url: str) -> None:
        with self._lock:
            delay = min(30.0, self._until.get(url, (0.0, 0.5))[1] * 2)
            self._until[url] = (time.monotonic() + delay, delay)

    def succeeded(self, url: str) -> None:
        with self._lock:
            self._until.pop(url, None)


_pause = _Pause()


@dataclass(frozen=True)
class _Answer:
    status: int
    text: str


@cache
def _client() -> httpx.Client:
    """One HTTP client for every submission: kept-alive connections, as tlog-witness recommends."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=32))


def _post(url: str, body: str, timeout: float) -> _Answer | None:
    try:
        response = _client().post(f"{url}/add-checkpoint", content=body.encode(), timeout=timeout)
    except httpx.HTTPError as exc:
        log.warning("witness %s unreachable: %s", url, exc)
        return None
    return _Answer(response.status_code, response.text)


def _proof(services: Services, old: int, new: int) -> tuple[bytes, ...]:
    if old == 0 or old >= new:
        return ()
    with services.engine.connect() as conn:
        return tuple(tlog.consistency_proof(conn, old, new))


def _submit(
    services: Services, witness: PolicyWitness, latest: tlog.StoredCheckpoint, old: int
) -> tuple[PolicyWitness, str, int] | None:
    """Submit to one witness (and once more from the size a 409 names); its verified cosignature line."""
    assert witness.url is not None
    timeout = services.settings.witness_timeout_seconds
    answer = None
    for _attempt in range(2):
        body = AddCheckpointRequest(old, _proof(services, old, latest.tree_size), latest.note).body()
        answer = _post(witness.url, body, timeout)
        if answer is None or answer.status != 409:
            break
        held = answer.text.strip()
        if not held.isdigit() or int(held) > latest.tree_size:
            log.error(
                "witness %s holds size %s of this log, beyond its newest checkpoint %d: a split view or lost data",
                witness.name,
                held[:30],
                latest.tree_size,
            )
            break
        old = int(held)
    if answer is None or answer.status != 200:
        if answer is not None:
            log.warning(
                "witness %s refused checkpoint %d: %s %s",
                witness.name,
                latest.tree_size,
                answer.status,
                answer.text[:200],
            )
        _pause.failed(witness.url)
        return None
    _pause.succeeded(witness.url)
    try:
        body_text, lines = parse_signed_note(latest.note + answer.text)
    except CheckpointFormatError as exc:
        log.warning("witness %s answered with a malformed note: %s", witness.name, exc.detail)
        return None
    for line in lines:
        if line.key_name == witness.cosigner.name and line.key_hash == witness.cosigner.key_hash:
            try:
                timestamp = verify_cosignature(body_text, line, witness.cosigner)
            except CheckpointFormatError as exc:
                log.warning("witness %s: %s", witness.name, exc.detail)
                continue
            return witness, line.line(), timestamp
    log.warning("witness %s answered without a valid cosignature from its key", witness.name)
    return None


def submit_to_witnesses(services: Services) -> list[str]:
    """Bring every reachable witness up to the newest checkpoint; the names of those that cosigned now."""
    policy = witness_policy(services.settings)
    if policy is None:
        return []
    with services.engine.connect() as conn:
        latest = tlog.latest_checkpoint(conn)
        held = _latest_cosigned_sizes(conn)
    if latest is None:
        return []
    due = [
        w
        for w in policy.witnesses.values()
        if w.url and held.get(w.cosigner.vkey, 0) < latest.tree_size and _pause.ready(w.url)
    ]
    if not due:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(due)), thread_name_prefix="mlledger-witness") as pool:
        results = list(pool.map(lambda w: _submit(services, w, latest, held.get(w.cosigner.vkey, 0)), due))
    cosigned_now = [r for r in results if r is not None]
    with services.writer_engine.begin() as conn:
        for witness, line, timestamp in cosigned_now:
            try:
                with conn.begin_nested():
                    conn.execute(
                        tlog.tlog_cosignatures.insert().values(
                            tree_size=latest.tree_size,
                            witness_vkey=witness.cosigner.vkey,
                            line=line,
                            cosigned_at=timestamp,
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another projector stored this witness's cosignature of this size first
    return [w.name for w, _, _ in cosigned_now]
