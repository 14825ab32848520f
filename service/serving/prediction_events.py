"""The ``Prediction.Made`` event of one served (or shadow) prediction.

A record without a data subject keeps its input in the event, encoded once
for the digest and the payload. A data subject's input and reason-code values
are encrypted with the subject's key (crypto-shredding: erasing the key makes
them unreadable while the event keeps its hash); the digest is then of the
ciphertext.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from domain.integrity.canonical import NumberRecordEncoder
from domain.prediction import Prediction
from service.serving.prediction_request import PredictRecord, Served
from service.serving.routing import Route
from service.serving.vault import SubjectKey, SubjectVault


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def recorded_input(
    encoder: NumberRecordEncoder,
    row: dict[str, Any],
    reason_codes: list[dict[str, Any]],
    subject_id: str | None,
    keys: dict[str, SubjectKey],
) -> dict[str, Any]:
    """The event fields that carry a prediction's input and reason codes: in clear, or encrypted for a subject."""
    if subject_id is None:
        encoded = encoder.encoded(row)  # encoded once: for the digest and in the event
        return dict(
            input=encoded,
            input_ciphertext=None,
            input_key_id=None,
            reason_codes=reason_codes,
            input_digest=_sha256(encoded.canonical),
        )
    key = keys[subject_id]
    secret = {"input": row, "reason_values": [code.get("value") for code in reason_codes]}
    ciphertext = SubjectVault.encrypt(key.key_id, key.key, json.dumps(secret, sort_keys=True).encode())
    return dict(
        input=None,
        input_ciphertext=ciphertext,
        input_key_id=key.key_id,
        reason_codes=[{k: v for k, v in code.items() if k != "value"} for code in reason_codes],
        input_digest=_sha256(ciphertext.encode()),
    )


def prediction_made(
    result: Served,
    route: Route,
    record: PredictRecord,
    row: dict[str, Any],
    base: float | None,
    *,
    keys: dict[str, SubjectKey],
    shadow_of: str | None,
    latency_ms: float,
    actor: str,
    now: datetime,
) -> Prediction.Made:
    """The event recording ``result`` (its ``prediction_id`` is set to the event's aggregate id)."""
    version, explainer = route.version, route.served.explainer
    explanation = None
    if explainer is not None and base is not None:
        explanation = {"explainer": explainer.name, "output_space": explainer.output_space, "base_value": base}
    output = result.output
    fields: dict[str, Any] = dict(
        model_name=result.model_name,
        model_version_id=route.served.version_id,
        number=version.number,
        role=result.role,
        request_id=result.request_id,
        shadow_of=shadow_of,
        subject_id=record.subject_id,
        output=output,
        explanation=explanation,
        latency_ms=round(latency_ms, 3),
        actor=actor,
    )
    fields.update(recorded_input(route.served.input_encoder, row, result.reason_codes, record.subject_id, keys))
    made = Prediction.made(timestamp=now, **fields)
    result.prediction_id = str(made.originator_id)
    return made
