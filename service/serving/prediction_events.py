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

from domain.prediction import Prediction
from service.serving.prediction_request import PredictRecord, Served
from service.serving.routing import Route
from service.serving.vault import SubjectKey, SubjectVault


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
    if record.subject_id is None:
        encoded = route.served.input_encoder.encoded(row)  # encoded once: for the digest and in the event
        fields.update(
            input=encoded,
            input_ciphertext=None,
            input_key_id=None,
            reason_codes=result.reason_codes,
            input_digest=_sha256(encoded.canonical),
        )
    else:
        key = keys[record.subject_id]
        secret = {"input": row, "reason_values": [code.get("value") for code in result.reason_codes]}
        ciphertext = SubjectVault.encrypt(key.key_id, key.key, json.dumps(secret, sort_keys=True).encode())
        fields.update(
            input=None,
            input_ciphertext=ciphertext,
            input_key_id=key.key_id,
            reason_codes=[{k: v for k, v in code.items() if k != "value"} for code in result.reason_codes],
            input_digest=_sha256(ciphertext.encode()),
        )
    made = Prediction.made(timestamp=now, **fields)
    result.prediction_id = str(made.originator_id)
    return made
