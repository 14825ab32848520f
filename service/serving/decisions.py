"""A decision reconstructed: everything a regulator asks about one prediction.

The input (decrypted with the data subject's key, unless the subject was
erased), the output and its reason codes, the model version with its lineage
and signed approvals, the deployment in force when it was made (for a logged
prediction, at the moment its maker states), overrides,
the outcome, and the inclusion proof of its event in the transparency log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import StoredEvent
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine

from domain.errors import NotFound
from domain.integrity.canonical import canonical_json
from domain.integrity.sealing import SealedEvent
from domain.prediction import Prediction
from projections import audit_queries as aq
from projections import transparency_log as tlog
from projections.predictions import predictions
from service.application.ledger_core import LedgerCore
from service.serving.prediction_request import PredictRecord, Served
from service.serving.vault import SubjectVault
from service.store.event_store import open_record
from service.store.persistence import read_events


class EventProof(BaseModel):
    """Where the prediction's event sits in the transparency log."""

    notification_id: int
    hash: str
    signature: str
    key_id: str
    leaf_index: int | None
    tree_size: int | None
    root_hash: str | None
    proof: list[str]
    checkpoint: str | None


class Decision(BaseModel):
    """One prediction and everything behind it."""

    prediction_id: str
    request_id: str
    model_name: str
    version: int
    model_version_id: str
    role: str
    shadow_of: str | None
    caller: str
    recorded_at: str
    origin: str
    """``served`` by this ledger, or ``logged``: made by another serving stack at ``predicted_at``."""
    predicted_at: str | None
    latency_ms: float | None
    subject_id: str | None
    input: dict[str, Any] | None
    input_erased: bool
    input_digest: str
    output: dict[str, Any]
    reason_codes: list[dict[str, Any]]
    explanation: dict[str, Any] | None
    outcome: Any
    has_outcome: bool
    overrides: list[dict[str, Any]]
    final_decision: dict[str, Any]
    champion_at_time: aq.ChampionAt | None
    lineage: aq.Lineage | None
    shadow: dict[str, Any] | None
    event: EventProof


def find_prediction(conn: Connection, reference: str, model_name: str | None = None) -> str:
    """The prediction id for a prediction id or a request id (the served prediction)."""
    try:
        uuid.UUID(reference)
        row = conn.execute(
            sa.select(predictions.c.prediction_id).where(predictions.c.prediction_id == reference)
        ).first()
        if row is not None:
            return str(row.prediction_id)
    except ValueError:
        pass
    query = sa.select(predictions.c.prediction_id, predictions.c.model_name).where(
        predictions.c.request_id == reference, predictions.c.role != "challenger"
    )
    if model_name is not None:
        query = query.where(predictions.c.model_name == model_name)
    rows = conn.execute(query.limit(2)).all()
    if not rows:
        raise NotFound(f"no prediction with id or request id {reference!r}", field="reference")
    if len(rows) > 1:
        raise NotFound(f"request id {reference!r} was used for several models; name the model", field="model")
    return str(rows[0].prediction_id)


def _event_proof(conn: Connection, sealed: SealedEvent, position: int) -> EventProof:
    """The event's seal and, once a checkpoint covers it, its inclusion proof."""
    leaf = tlog.leaf_for_notification(conn, position)
    proof = EventProof(
        notification_id=position,
        hash=sealed.hash,
        signature=sealed.signature,
        key_id=sealed.key_id,
        leaf_index=None,
        tree_size=None,
        root_hash=None,
        proof=[],
        checkpoint=None,
    )
    if leaf is None:
        return proof
    latest = tlog.latest_checkpoint(conn)
    if latest is None or latest.tree_size <= leaf.leaf_index:
        return proof
    proof.leaf_index = leaf.leaf_index
    proof.tree_size = latest.tree_size
    proof.root_hash = latest.root_hash.hex()
    proof.proof = [p.hex() for p in tlog.inclusion_proof(conn, leaf.leaf_index, latest.tree_size)]
    proof.checkpoint = latest.note
    return proof


def reconstruct(
    conn: Connection, ledger: LedgerCore, vault: SubjectVault, reference: str, model_name: str | None = None
) -> Decision:
    """Reconstruct the decision of a prediction (by prediction id or request id)."""
    prediction_id = find_prediction(conn, reference, model_name)
    row = conn.execute(sa.select(predictions).where(predictions.c.prediction_id == prediction_id)).one()
    made = ledger.recorder.select_events(uuid.UUID(prediction_id), lte=1, limit=1)
    sealed, envelope = open_record(made[0])
    payload = envelope["payload"]
    aggregate: Prediction = ledger.get(prediction_id, Prediction)
    clear, values = vault.recorded_input(payload)
    erased = clear is None
    reason_codes = _reason_codes(payload, values)
    shadow_row = conn.execute(
        sa.select(predictions.c.prediction_id, predictions.c.number, predictions.c.output).where(
            predictions.c.shadow_of == prediction_id
        )
    ).first()
    final = aggregate.overrides[-1]["decision"] if aggregate.overrides else aggregate.output
    return Decision(
        prediction_id=prediction_id,
        request_id=row.request_id,
        model_name=row.model_name,
        version=row.number,
        model_version_id=row.model_version_id,
        role=row.role,
        shadow_of=row.shadow_of,
        caller=row.caller,
        recorded_at=row.recorded_at,
        origin=row.origin,
        predicted_at=row.predicted_at,
        latency_ms=row.latency_ms,
        subject_id=row.subject_id,
        input=clear,
        input_erased=erased,
        input_digest=payload["input_digest"],
        output=payload["output"],
        reason_codes=reason_codes,
        explanation=payload["explanation"],
        outcome=aggregate.outcome,
        has_outcome=aggregate.has_outcome,
        overrides=list(aggregate.overrides),
        final_decision=final,
        champion_at_time=aq.champion_at(conn, row.model_name, row.predicted_at or row.recorded_at),
        lineage=aq.lineage(conn, row.model_name, row.number),
        shadow=None
        if shadow_row is None
        else {
            "prediction_id": shadow_row.prediction_id,
            "version": shadow_row.number,
            "output": json.loads(shadow_row.output),
        },
        event=_event_proof(conn, sealed, row.position),
    )


def recorded_answers(
    ledger: LedgerCore,
    engine: Engine,
    vault: SubjectVault,
    model_name: str,
    records: Sequence[PredictRecord],
    actor: str,
) -> list[Served] | None:
    """The answers already recorded for ``records``' request ids, if every one is its request again: the
    same caller, model, data subject and input; None when any is not (no such prediction, someone else's,
    another input, a subject erased since, or a record without a request id).

    Read from the event log (``engine``'s database), not a read model, so a retry
    right after its first try committed finds it; every prediction's first event
    in one query, however many records. Their ``position`` is the log's head,
    which is at or after every recorded event, so reads that wait for it see the
    predictions.
    """
    if any(record.request_id is None for record in records):
        return None
    # Each event found below was committed before the write that conflicted with it, so before this read.
    position = ledger.position()
    ids = [Prediction.create_id(model_name, str(record.request_id)) for record in records]
    made = {row.aggregate_id: row for row in read_events(engine, ids) if row.version == 1}
    answers = []
    for record, prediction_id in zip(records, ids, strict=True):
        row = made.get(str(prediction_id))
        if row is None:
            return None
        stored = StoredEvent(originator_id=prediction_id, originator_version=1, topic=row.topic, state=row.record)
        _sealed, envelope = open_record(stored)
        payload = envelope["payload"]
        if envelope["actor"] != actor or payload["subject_id"] != record.subject_id:
            return None
        clear, values = vault.recorded_input(payload)
        if clear is None or canonical_json(clear) != canonical_json(dict(record.input)):
            return None
        answers.append(
            Served(
                prediction_id=str(prediction_id),
                request_id=str(record.request_id),
                model_name=payload["model_name"],
                version=payload["number"],
                role=payload["role"],
                output=payload["output"],
                reason_codes=_reason_codes(payload, values),
                position=position,
            )
        )
    return answers


def _reason_codes(payload: dict[str, Any], values: list[Any]) -> list[dict[str, Any]]:
    """A ``Made`` payload's reason codes with the values a data subject's ciphertext held put back."""
    codes = [dict(code) for code in payload["reason_codes"]]
    for code, value in zip(codes, values, strict=False):
        code["value"] = value
    return codes
