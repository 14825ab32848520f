"""Predictions another serving stack made, logged as signed ``Prediction.Logged`` events.

The caller names the model, the version that made the predictions and its
role (champion or canary), and for each record its input, output, the moment
it was made and, optionally, reason codes, a request id, a data subject and
the latency its stack measured. Everything that can refuse the batch is
checked before anything is written, so a batch is recorded whole or not at all:

- the version exists, is approved under the model's policy, and held that role of a live (neither stopped nor
  retired) deployment at each record's moment, which is not in the future
  (:class:`~domain.deployment_history.DeploymentHistory`, replayed from the
  deployment's own events, not a read model that may lag);
- each input against the version's input schema, as served inputs are;
- each output is a non-empty JSON object, reason codes name input features
  and carry finite contributions (their values are the record's inputs);
- request ids are unique in the batch (and, when written, per model: a request
  id served or logged once is refused after), data subjects not erased.

The events are then built as served ones are (inputs of data subjects
encrypted with their keys; :func:`~service.serving.prediction_events.recorded_input`)
and go to the serving path's group committer, so a batch costs one
transaction and one batch of signatures. Logged predictions are therefore
reconstructed, monitored for drift, erased and exported as served ones are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.deployment import Deployment
from domain.deployment_history import DeploymentHistory
from domain.errors import ApprovalRequired, InvalidPayload, NotFound, NotServedInRole
from domain.integrity.canonical import canonical_json
from domain.integrity.sealing import format_timestamp
from domain.model import APPROVED, Model, ModelVersion
from domain.prediction import CANARY, CHAMPION, Prediction
from service.application.ledger_core import LedgerCore
from service.common.bounded_cache import BoundedCache
from service.serving.group_commit import GroupCommitter
from service.serving.input_schema import InputSchema
from service.serving.models import ModelCache, NotServable
from service.serving.predict import checked_request_ids
from service.serving.prediction_events import recorded_input
from service.serving.prediction_request import COMMIT_TIMEOUT
from service.serving.row_check import check_inputs
from service.serving.subject_keys import SubjectKeys, subjects_of

LOGGED_ROLES = (CHAMPION, CANARY)
MAX_OUTPUT_BYTES = 10_000  # one record's output, as canonical JSON
_MAX_SCHEMAS = 256


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """One prediction made elsewhere: its input and output, when it was made, and optionally more."""

    input: dict[str, Any]
    output: dict[str, Any]
    predicted_at: str
    reason_codes: list[dict[str, Any]] | None = None
    request_id: str | None = None
    subject_id: str | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class LogAsk:
    """A batch of predictions one version of a model made in one role, logged by ``caller``."""

    model_name: str
    version: int
    role: str
    records: Sequence[LoggedRecord]
    caller: str


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    """The recorded predictions' ids (in record order), request ids and the position of the last event."""

    prediction_ids: list[str]
    request_ids: list[str]
    position: int


class PredictionLog:
    """Logs predictions made elsewhere through the serving path's group committer."""

    def __init__(
        self,
        ledger: LedgerCore,
        models: ModelCache,
        subject_keys: SubjectKeys,
        committer: GroupCommitter,
        *,
        max_rows: int = 10_000,
    ) -> None:
        self._ledger = ledger
        self._models = models
        self._subject_keys = subject_keys
        self._committer = committer
        self._max_rows = max_rows
        self._schemas: BoundedCache[str, InputSchema] = BoundedCache(_MAX_SCHEMAS)

    def log(self, ask: LogAsk) -> LoggedBatch:
        """Check the whole batch, then record it in one transaction; the answer comes once it is durable."""
        records = ask.records
        if not records:
            raise InvalidPayload("the batch is empty; send at least one record", field="records")
        if len(records) > self._max_rows:
            raise InvalidPayload(
                f"the batch has {len(records)} records; the limit is {self._max_rows}", field="records"
            )
        if ask.role not in LOGGED_ROLES:
            raise InvalidPayload(f"role must be one of {', '.join(LOGGED_ROLES)}", field="role")
        version = self._version(ask.model_name, ask.version)
        now = Prediction.Logged.create_timestamp()
        moments = self._moments(ask, version, now)
        schema = self._schema(version)
        checked: list[dict[str, Any]] = [{} for _ in records]
        check_inputs([record.input for record in records], range(len(records)), schema, checked)
        ids = checked_request_ids(records)
        names = frozenset(schema.names)
        codes = [_reason_codes(record, checked[i], names, i) for i, record in enumerate(records)]
        for i, record in enumerate(records):
            _check_output(record.output, i)
            _check_latency(record.latency_ms, i)
        keys = self._subject_keys.keys(subjects_of(records))  # last: a new subject's key is issued here
        held: Future[None] = Future()  # the keys this batch issued are its own until it is over
        self._subject_keys.hold_new(keys, held, set())
        try:
            events: list[Any] = []
            for i, record in enumerate(records):
                fields: dict[str, Any] = dict(
                    model_name=ask.model_name,
                    model_version_id=str(version.id),
                    number=version.number,
                    role=ask.role,
                    request_id=ids[i],
                    shadow_of=None,
                    subject_id=record.subject_id,
                    output=record.output,
                    explanation=None,
                    latency_ms=record.latency_ms,
                    actor=ask.caller,
                )
                fields.update(recorded_input(schema.encoder, checked[i], codes[i], record.subject_id, keys))
                events.append(Prediction.logged(predicted_at=moments[i], timestamp=now, **fields))
            committed = self._committer.submit([*self._subject_keys.new_subjects(keys, ask.caller), *events])
            position = committed.result(timeout=COMMIT_TIMEOUT)
        except BaseException:
            self._subject_keys.destroy_new(keys)
            raise
        finally:
            held.set_result(None)
        return LoggedBatch([str(e.originator_id) for e in events], ids, position)

    def _version(self, model_name: str, number: int) -> ModelVersion:
        model: Model = self._ledger.get(Model.create_id(name=model_name), Model)
        if not 1 <= number <= len(model.versions):
            raise NotFound(f"model {model_name} has no version {number}", field="version")
        version: ModelVersion = self._ledger.get(model.versions[number - 1], ModelVersion)
        if version.state(model.policy) != APPROVED:
            raise ApprovalRequired(
                f"{model_name} v{number} is not approved under the model's policy; "
                "only approved, deployed versions' predictions are logged"
            )
        return version

    def _moments(self, ask: LogAsk, version: ModelVersion, now: datetime) -> list[str]:
        """Each record's moment (RFC 3339 UTC), checked: not in the future, and the version served in its role then."""
        history = self._history(ask.model_name)
        version_id = str(version.id)
        seen: dict[str, str] = {}  # a batch's records often share moments: each is checked once
        moments: list[str] = []
        for i, record in enumerate(ask.records):
            text = record.predicted_at
            moment = seen.get(text)
            if moment is None:
                where = f"records.{i}.predicted_at"
                at = _parse_moment(text, where)
                if at > now:
                    raise InvalidPayload(
                        f"{where} is {format_timestamp(at)}, after the ledger's clock ({format_timestamp(now)}): "
                        "a prediction is logged after it was made",
                        field=where,
                    )
                history.check_served(version_id, version.number, ask.role, at, field=where)
                moment = seen[text] = format_timestamp(at)
            moments.append(moment)
        return moments

    def _history(self, model_name: str) -> DeploymentHistory:
        deployment_id = Deployment.create_id(model_name=model_name)
        events = [e for e in self._ledger.events.get(deployment_id) if isinstance(e, Deployment.Event)]
        if not events:
            raise NotServedInRole(f"{model_name} was never deployed", field="version")
        return DeploymentHistory.replay(model_name, events)

    def _schema(self, version: ModelVersion) -> InputSchema:
        """The version's registered input schema, else the one serving derives from its model."""
        key = str(version.id)
        schema = self._schemas.get(key)
        if schema is None:
            if version.input_schema:
                schema = InputSchema(version.input_schema)
            else:
                try:
                    schema = self._models.get(version).schema
                except NotServable:
                    raise InvalidPayload(
                        f"{version.model_name} v{version.number} has no registered input schema to check the "
                        "inputs against; register the version with its input_schema",
                        field="version",
                    ) from None
            self._schemas.put(key, schema)
        return schema


def _parse_moment(text: str, where: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidPayload(f"{where} must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z", field=where) from None
    if at.tzinfo is None:
        raise InvalidPayload(f"{where} must name its time zone (e.g. a trailing Z for UTC)", field=where)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # e.g. year 1 at +14:00
        raise InvalidPayload(f"{where} is outside the range of UTC times", field=where) from None


def _check_output(output: Any, i: int) -> None:
    where = f"records.{i}.output"
    if not isinstance(output, dict) or not output:
        raise InvalidPayload('an output is a non-empty object, e.g. {"label": 1, "probability": 0.8}', field=where)
    if len(canonical_json(output, path=where)) > MAX_OUTPUT_BYTES:
        raise InvalidPayload(f"{where} is larger than {MAX_OUTPUT_BYTES} bytes as canonical JSON", field=where)


def _check_latency(latency_ms: Any, i: int) -> None:
    if latency_ms is None:
        return
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not math.isfinite(latency_ms):
        raise InvalidPayload("latency_ms must be a finite number", field=f"records.{i}.latency_ms")
    if latency_ms < 0:
        raise InvalidPayload("latency_ms may not be negative", field=f"records.{i}.latency_ms")


def _reason_codes(record: LoggedRecord, row: dict[str, Any], names: frozenset[str], i: int) -> list[dict[str, Any]]:
    """The record's reason codes as the events hold them: feature (one of ``names``), its input value, contribution."""
    codes: list[dict[str, Any]] = []
    for j, code in enumerate(record.reason_codes or ()):
        feature, contribution = code.get("feature"), code.get("contribution", None)
        if feature not in names:
            where = f"records.{i}.reason_codes.{j}.feature"
            raise InvalidPayload(f"{where} must name one of the version's input features", field=where)
        if (
            isinstance(contribution, bool)
            or not isinstance(contribution, (int, float))
            or not math.isfinite(contribution)
        ):
            where = f"records.{i}.reason_codes.{j}.contribution"
            raise InvalidPayload(f"{where} must be a finite number", field=where)
        codes.append({"feature": feature, "value": row[feature], "contribution": float(contribution)})
    return codes
