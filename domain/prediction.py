"""Prediction: one decision of a deployed model, recorded as a signed event.

A prediction names the model version that made it, the role it played
(``champion`` answers, ``canary`` answers a share of traffic, ``challenger``
predicts in shadow and is never returned), the request it answered, the
caller, the output, the top reason codes and the latency. Its input is either
recorded in clear or, when it belongs to a data subject, encrypted with that
subject's key: then the event holds only the ciphertext (and its digest), so
destroying the key makes the input unreadable while every hash, signature and
proof still verifies. Reason-code *values* are inputs too, so for a subject
they travel inside the ciphertext and the event keeps only feature names and
contributions.

A prediction made by another serving stack can be logged after the fact
(``Logged``): the same record, marked as logged, with the moment its maker
says it was made. It was valid only if that version held that role in the
model's deployment at that moment (:func:`check_logged_role`).

Later events record what happened to the decision: the observed outcome
(ground truth) and human overrides (EU AI Act Art. 14).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload, OutcomeAlreadyRecorded, ShadowNotServed
from domain.statistics.series import series_id

CHAMPION, CANARY, CHALLENGER = "champion", "canary", "challenger"
ROLES = (CHAMPION, CANARY, CHALLENGER)
REQUEST_ID_MAX = 200
SUBJECT_ID_MAX = 200
REASON_MAX = 2_000

NUMERIC_TYPES = ("number", "float", "double", "integer", "int")
TEXT_TYPES = ("string", "str", "category", "categorical")


def check_request_id(request_id: object, field: str = "request_id") -> str:
    """Request ids are 1..200 printable characters."""
    if not isinstance(request_id, str) or not request_id or len(request_id) > REQUEST_ID_MAX:
        raise InvalidPayload(f"{field} must be 1 to {REQUEST_ID_MAX} characters", field=field)
    if not request_id.isprintable():
        raise InvalidPayload(f"{field} may not contain control characters", field=field)
    return request_id


def check_subject_id(subject_id: object, field: str = "subject_id") -> str:
    """Subject ids are 1..200 printable characters (an opaque reference, never a name)."""
    if not isinstance(subject_id, str) or not subject_id or len(subject_id) > SUBJECT_ID_MAX:
        raise InvalidPayload(f"{field} must be 1 to {SUBJECT_ID_MAX} characters", field=field)
    if not subject_id.isprintable():
        raise InvalidPayload(f"{field} may not contain control characters", field=field)
    return subject_id


def check_input_row(row: object, schema: Sequence[Mapping[str, Any]], field: str = "input") -> dict[str, Any]:
    """Check one input record against a model version's input schema.

    Every schema column must be present and no other key may be; numeric
    columns take finite numbers (``nullable`` columns also take null), text
    columns take strings. Returns the row with keys in schema order.
    """
    if not isinstance(row, Mapping):
        raise InvalidPayload(f"{field} must be an object of feature values", field=field)
    names = [str(column["name"]) for column in schema]
    extra = sorted(set(row) - set(names))
    if extra:
        raise InvalidPayload(
            f"{field} has features the model does not take: {', '.join(extra)}", field=f"{field}.{extra[0]}"
        )
    checked: dict[str, Any] = {}
    for column in schema:
        name = str(column["name"])
        where = f"{field}.{name}"
        if name not in row:
            raise InvalidPayload(f"{field} is missing the feature {name!r}", field=where)
        value = row[name]
        kind = str(column.get("type", "number")).lower()
        nullable = bool(column.get("nullable", False))
        if value is None:
            if not nullable:
                raise InvalidPayload(f"feature {name!r} may not be null", field=where)
        elif kind in TEXT_TYPES:
            if not isinstance(value, str):
                raise InvalidPayload(f"feature {name!r} must be a string", field=where)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidPayload(f"feature {name!r} must be a number", field=where)
        elif not math.isfinite(value):
            raise InvalidPayload(
                f"feature {name!r} must be a finite number (NaN and Infinity are not allowed)", field=where
            )
        checked[name] = value
    return checked


class Prediction(LedgerAggregate):
    """One decision, its explanation, and what later happened to it."""

    class Made(Aggregate.Created, LedgerAggregate.Event):
        """A model version made a prediction.

        ``input`` is the record in clear (no subject) or None; ``input_ciphertext``
        is base64(nonce || AES-GCM ciphertext) of ``{"input": ..., "reason_values": [...]}``
        under the subject's key ``input_key_id``. ``input_digest`` is
        ``sha256:`` of the canonical clear input, or of the ciphertext bytes when
        encrypted (a digest of a clear low-entropy input would outlive erasure).
        """

        TOPIC = "mlledger.prediction.Made.v1"
        model_name: str
        model_version_id: str
        number: int
        role: str
        request_id: str
        shadow_of: str | None
        subject_id: str | None
        input_digest: str
        input: dict[str, Any] | None
        input_ciphertext: str | None
        input_key_id: str | None
        output: dict[str, Any]
        reason_codes: list[dict[str, Any]]
        explanation: dict[str, Any] | None
        latency_ms: float

    class Logged(Made):
        """Another serving stack made this prediction at ``predicted_at``; it was logged here afterwards.

        Its fields are those of ``Made`` (``latency_ms`` may be None: the
        maker did not say), plus the moment the prediction was made as its
        maker states it (RFC 3339 UTC). The version served in ``role`` at
        that moment, which the ledger checked before recording it.
        """

        TOPIC = "mlledger.prediction.Logged.v1"
        predicted_at: str

    class OutcomeRecorded(LedgerAggregate.Event):
        """The true outcome became known."""

        TOPIC = "mlledger.prediction.OutcomeRecorded.v1"
        outcome: Any

    class Overridden(LedgerAggregate.Event):
        """A person reversed or replaced the decision."""

        TOPIC = "mlledger.prediction.Overridden.v1"
        decision: dict[str, Any]
        reason: str

    @staticmethod
    def create_id(model_name: str, request_id: str, role: str = CHAMPION, **_: object) -> uuid.UUID:
        """One served prediction (and at most one shadow) per (model, request id).

        A replayed request id is refused when written, whichever version served it.
        """
        kind = "shadow" if role == CHALLENGER else "served"
        return series_id("prediction", f"{model_name}\n{kind}\n{request_id}")

    @event(Made)
    def __init__(
        self,
        model_name: str,
        model_version_id: str,
        number: int,
        role: str,
        request_id: str,
        shadow_of: str | None,
        subject_id: str | None,
        input_digest: str,
        input: dict[str, Any] | None,
        input_ciphertext: str | None,
        input_key_id: str | None,
        output: dict[str, Any],
        reason_codes: list[dict[str, Any]],
        explanation: dict[str, Any] | None,
        latency_ms: float | None,
        actor: str,
    ) -> None:
        self.model_name = model_name
        self.model_version_id = model_version_id
        self.number = number
        self.role = role
        self.request_id = request_id
        self.subject_id = subject_id
        self.output = output
        self.outcome: Any = None
        self.has_outcome = False
        self.overrides: list[dict[str, Any]] = []

    @classmethod
    def make(cls, **fields: Any) -> Prediction:
        """Record a prediction after checking the fields the rules depend on."""
        cls._check_made(fields)
        return cls(**fields)

    @classmethod
    def logged(cls, *, predicted_at: str, timestamp: datetime | None = None, **fields: Any) -> Prediction.Logged:
        """The ``Logged`` event of a prediction another serving stack made at ``predicted_at``.

        Checked as :meth:`made` checks it; a logged prediction is never a shadow.
        """
        if fields.get("role") == CHALLENGER:
            raise InvalidPayload("a logged prediction answered a request: its role is champion or canary", field="role")
        logged = cls._event(cls.Logged, timestamp, fields)
        logged.__dict__["predicted_at"] = predicted_at
        return logged

    @classmethod
    def made(cls, *, timestamp: datetime | None = None, **fields: Any) -> Prediction.Made:
        """The ``Made`` event of a new prediction, checked as :meth:`make` checks it, without the aggregate.

        Serving records thousands of predictions at once and never reads them
        back as aggregates; building only the event costs a fraction of
        building the aggregate. ``made(**fields).mutate(None)`` is the
        aggregate ``make(**fields)`` returns. Events of one request may share
        a ``timestamp``.
        """
        return cls._event(cls.Made, timestamp, fields)

    @classmethod
    def _event(cls, kind: type[MadeT], timestamp: datetime | None, fields: dict[str, Any]) -> MadeT:
        """A checked creation event of ``kind`` built from its fields, as the event store rebuilds events it reads."""
        if fields.keys() != _MADE_FIELDS:
            missing, extra = sorted(_MADE_FIELDS - fields.keys()), sorted(fields.keys() - _MADE_FIELDS)
            raise TypeError(f"Prediction.{kind.__name__}: missing {missing}, unexpected {extra}")
        cls._check_made(fields)
        state = dict(fields)
        state["originator_id"] = cls.create_id(**fields)
        state["originator_version"] = cls.INITIAL_VERSION
        state["timestamp"] = timestamp or cls.Made.create_timestamp()
        state["originator_topic"] = _topic()
        made = object.__new__(kind)
        object.__setattr__(made, "__dict__", state)
        return made

    @staticmethod
    def _check_made(fields: Mapping[str, Any]) -> None:
        if fields.get("role") not in ROLES:
            raise InvalidPayload(f"role must be one of {', '.join(ROLES)}", field="role")
        check_request_id(fields.get("request_id"))
        if fields.get("subject_id") is not None:
            check_subject_id(fields["subject_id"])
        if (fields.get("input") is None) == (fields.get("input_ciphertext") is None):
            raise InvalidPayload("a prediction records its input either in clear or encrypted", field="input")
        if (fields["role"] == CHALLENGER) != (fields.get("shadow_of") is not None):
            raise InvalidPayload("exactly the challenger's predictions shadow another prediction", field="shadow_of")

    def record_outcome(self, outcome: Any, actor: str) -> None:
        """Record the ground truth once."""
        if self.has_outcome:
            raise OutcomeAlreadyRecorded("this prediction already has an outcome", field="outcome")
        if self.role == CHALLENGER:
            raise ShadowNotServed("outcomes are recorded on the served prediction, not its shadow", field="outcome")
        self._record_outcome(outcome=outcome, actor=actor)

    @event(OutcomeRecorded)
    def _record_outcome(self, outcome: Any, actor: str) -> None:
        self.outcome = outcome
        self.has_outcome = True

    def override(self, decision: dict[str, Any], reason: str, actor: str) -> None:
        """A person replaces the decision; the reason is mandatory."""
        if self.role == CHALLENGER:
            raise ShadowNotServed("a shadow prediction was never served, so it cannot be overridden", field="decision")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
            raise InvalidPayload(f"an override needs a reason of 1 to {REASON_MAX} characters", field="reason")
        if not isinstance(decision, dict) or not decision:
            raise InvalidPayload('decision must be a non-empty object, e.g. {"label": 0}', field="decision")
        self._override(decision=decision, reason=reason, actor=actor)

    @event(Overridden)
    def _override(self, decision: dict[str, Any], reason: str, actor: str) -> None:
        self.overrides.append({"decision": decision, "reason": reason, "actor": actor})


MadeT = TypeVar("MadeT", bound=Prediction.Made)
_MADE_FIELDS = frozenset(f.name for f in dataclasses.fields(Prediction.Made)) - {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
}


@functools.cache
def _topic() -> str:
    return get_topic(Prediction)
