"""What a prediction request carries in and gets back.

The API reads requests into :class:`PredictRecord` and :class:`PredictAsk`;
the prediction service answers each record with a :class:`Served` once its
events are durable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

COMMIT_TIMEOUT = 60.0  # seconds a request waits for its events to be durable


@dataclass(frozen=True)
class PredictRecord:
    """One record to predict: its input and, optionally, a request id and a data subject."""

    input: dict[str, Any]
    request_id: str | None = None
    subject_id: str | None = None


@dataclass(frozen=True)
class PredictAsk:
    """One request: records for a model, from a caller, arrived at ``started`` (``time.perf_counter``)."""

    model_name: str
    records: Sequence[PredictRecord]
    caller: str
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Served:
    """What the caller gets back for one record (its id and log position are set as it is recorded)."""

    prediction_id: str
    request_id: str
    model_name: str
    version: int
    role: str
    output: dict[str, Any]
    reason_codes: list[dict[str, Any]]
    position: int = 0
