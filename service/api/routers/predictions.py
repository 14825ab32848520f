"""Serving predictions (or logging those served elsewhere), and what happens to them afterwards: outcomes,
overrides, erasure, reconstruction."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from domain.errors import VersionConflict
from domain.prediction import REQUEST_ID_MAX, SUBJECT_ID_MAX
from service.api.deps import (
    POSITION_HEADER,
    ConnDep,
    DecisionReader,
    LedgerDep,
    OutcomeRecorder,
    Overrider,
    PredictionLogger,
    Predictor,
    SubjectEraser,
    bearer_token,
    predicting_key,
    written,
)
from service.api.schemas import WriteResult
from service.api.write_brake import WriteBrake
from service.application.auth import authenticate_digest, token_digest
from service.bootstrap import Services
from service.serving.decisions import Decision, reconstruct, recorded_answers
from service.serving.predict import PredictRecord, Served
from service.serving.prediction_log import LogAsk, LoggedRecord
from service.serving.runtime import Serving

router = APIRouter(prefix="/v1", tags=["predictions"])
BodyT = TypeVar("BodyT", bound=BaseModel)
MAX_NAME = 200
NamePath = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]
IdPath = Annotated[str, Path(min_length=1, max_length=200)]
MAX_FEATURES = 10_000
_MAX_RECORDS = 100_000


async def get_serving(request: Request) -> Serving:
    """The process's serving parts."""
    serving: Serving = request.app.state.serving
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


def write_brake(request: Request) -> contextlib.AbstractContextManager[None]:
    """Hold a bulk prediction write back while the read models are too far behind (``WriteBrake``);
    declared after the caller, so only an authorized request waits. The write then makes and commits
    its events inside the turn this returns (:meth:`WriteBrake.writing`)."""
    brake: WriteBrake | None = getattr(request.app.state, "write_brake", None)
    if brake is None or not brake.on:
        return contextlib.nullcontext()
    key = token_digest(bearer_token(request))  # the key's digest only when writes can be held back
    brake.wait(key)
    return brake.writing(key)


Braked = Annotated[contextlib.AbstractContextManager[None], Depends(write_brake)]


class PredictBody(BaseModel):
    """One record to predict."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(
        max_length=MAX_FEATURES, description="feature name -> value, as the input schema says"
    )
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=REQUEST_ID_MAX,
        description="your id for this decision (unique per model); default: generated",
    )
    subject_id: str | None = Field(
        None,
        min_length=1,
        max_length=SUBJECT_ID_MAX,
        description="the data subject the input is about: the input is then encrypted with their key (erasable)",
    )


class PredictBatchBody(BaseModel):
    """Many records to predict in one request (one transaction)."""

    model_config = ConfigDict(extra="forbid")

    records: list[PredictBody] = Field(max_length=_MAX_RECORDS)


class PredictionPublic(BaseModel):
    """A served prediction."""

    prediction_id: str
    request_id: str
    model_name: str
    version: int
    output: dict[str, Any]
    reason_codes: list[dict[str, Any]]


class PredictResult(PredictionPublic):
    """A served prediction and the ledger position of its event."""

    position: int


class PredictBatchResult(BaseModel):
    """The served predictions, in the order of the records."""

    predictions: list[PredictionPublic]
    position: int


def _public(result: Served) -> dict[str, Any]:
    """What the caller sees of a served prediction: plain JSON values already.

    They are finite (the signed events hold the same numbers), so answers are
    written directly, without validating every value again.
    """
    return {
        "prediction_id": result.prediction_id,
        "request_id": result.request_id,
        "model_name": result.model_name,
        "version": result.version,
        "output": result.output,
        "reason_codes": result.reason_codes,
    }


def _record(body: PredictBody) -> PredictRecord:
    return PredictRecord(input=body.input, request_id=body.request_id, subject_id=body.subject_id)


def _answer(payload: dict[str, Any], position: int) -> Response:
    return Response(to_json(payload), media_type="application/json", headers={POSITION_HEADER: str(position)})


class RequestRoute(APIRoute):
    """A documented route whose endpoint takes the request and answers it itself.

    FastAPI documents it like any route (the parameters and the body are
    written out in ``openapi_extra``) but calls the endpoint with the request
    alone: no dependencies solved, no parameters validated for it. On the
    busiest endpoint that machinery cost the event loop as much as everything
    else the request needs; the endpoint checks what it reads itself.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


def parsed_body(model: type[BodyT], request_body: bytes, content_type: str | None) -> BodyT:
    """A JSON body parsed and validated by pydantic in one pass (errors as FastAPI reports a body's).

    Only a JSON body is read (:class:`~service.api.limits.JsonBodyLimit` bounds those).
    """
    if not _is_json(content_type):
        message = "send the body as JSON (Content-Type: application/json)"
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "msg": message}])
    try:
        return model.model_validate_json(request_body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _is_json(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with its nested models written in place (for ``openapi_extra``)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return dict(inline(schema))


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _inline_schema(model)}}, "required": True}


_NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "title": "Name"},
}


async def predict(request: Request) -> Response:
    """Predict one record with the deployed model; the answer comes after its signed event is durable."""
    # Served on the event loop: the predict queue's thread serves the concurrent requests together.
    name = request.path_params["name"]
    if len(name) > MAX_NAME:
        message = f"String should have at most {MAX_NAME} characters"
        raise RequestValidationError([{"type": "string_too_long", "loc": ("path", "name"), "msg": message}])
    key = await predicting_key(request, request.app.state.services.ledger)  # refused before the body is read
    brake: WriteBrake | None = getattr(request.app.state, "write_brake", None)
    if brake is not None and brake.on:
        await run_in_threadpool(brake.wait, key)
    body = parsed_body(PredictBody, await request.body(), request.headers.get("content-type"))
    serving: Serving = request.app.state.serving
    record = _record(body)
    try:
        result = await serving.queue.predict(name, record, key)
    except VersionConflict:
        if record.request_id is None:
            raise
        replayed = await run_in_threadpool(_replayed, request.app.state.services, serving, name, record, key)
        if replayed is None:
            raise
        response = _answer({**_public(replayed), "position": replayed.position}, replayed.position)
        response.headers[REPLAYED_HEADER] = "true"
        return response
    return _answer({**_public(result), "position": result.position}, result.position)


REPLAYED_HEADER = "Idempotent-Replayed"
"""Set on the answer to a retried prediction whose first try was already recorded."""


def _replayed(services: Services, serving: Serving, name: str, record: PredictRecord, key: str) -> Served | None:
    """The recorded answer when this request (same key's principal, input and subject) was recorded before."""
    actor = authenticate_digest(services.ledger, key).actor
    answers = recorded_answers(services.ledger, services.engine, serving.vault, name, [record], actor)
    return answers[0] if answers else None


router.add_api_route(
    "/models/{name}/predict",
    predict,
    methods=["POST"],
    response_model=PredictResult,
    openapi_extra={"parameters": [_NAME_PARAMETER], "requestBody": _json_body(PredictBody)},
    route_class_override=RequestRoute,
)


async def batch_body(request: Request) -> list[PredictRecord]:
    """The records of a batch body, checked as :class:`PredictBatchBody` says.

    A batch is large (1,000 records of 30 features are about 860 KB). A
    well-formed one is decoded by ``orjson`` and its records checked here in
    one pass; anything else (or anything ``orjson`` refuses) is read by
    pydantic, which accepts the same bodies and names the problem.
    """
    content_type = request.headers.get("content-type")
    body = await request.body()
    if _is_json(content_type):
        try:
            records = _well_formed_records(orjson.loads(body))
        except orjson.JSONDecodeError:
            records = None
        if records is not None:
            return records
    return [_record(r) for r in parsed_body(PredictBatchBody, body, content_type).records]


_RECORD_FIELDS = frozenset(PredictBody.model_fields)


def _well_formed_records(data: Any) -> list[PredictRecord] | None:
    """The records of a decoded batch body :class:`PredictBatchBody` accepts as it stands, else None."""
    if type(data) is not dict or len(data) != 1 or type(records := data.get("records")) is not list:
        return None
    if len(records) > _MAX_RECORDS:
        return None
    read: list[PredictRecord] = []
    for record in records:
        if type(record) is not dict or not record.keys() <= _RECORD_FIELDS:
            return None
        values = record.get("input")
        request_id, subject_id = record.get("request_id"), record.get("subject_id")
        if type(values) is not dict or len(values) > MAX_FEATURES:
            return None
        if not (_absent_or_text(request_id, REQUEST_ID_MAX) and _absent_or_text(subject_id, SUBJECT_ID_MAX)):
            return None
        read.append(PredictRecord(values, request_id, subject_id))
    return read


def _absent_or_text(value: Any, longest: int) -> bool:
    return value is None or (type(value) is str and 0 < len(value) <= longest)


@router.post(
    "/models/{name}/predict:batch",
    response_model=PredictBatchResult,
    openapi_extra={"requestBody": _json_body(PredictBatchBody)},
)
def predict_batch(
    request: Request,
    name: NamePath,
    caller: Predictor,
    turn: Braked,
    records: Annotated[list[PredictRecord], Depends(batch_body)],
    serving: ServingDep,
) -> Response:
    """Predict many records in one request: one transaction, one batch of signatures.

    A batch whose every record has a request id is retried safely: when each was
    recorded before by this caller with the same input and subject (the first try
    committed, its answer was lost), the recorded answers come back, marked
    ``Idempotent-Replayed: true``; a batch only some of whose request ids are taken
    is refused (409) and records nothing.
    """
    # Dependencies resolve in this order: the caller is authorized before the body is read.
    replayed: list[Served] | None = None
    try:
        with turn:
            results = serving.predictor.predict(name, records, caller.actor)
    except VersionConflict:
        replayed = _replayed_batch(request.app.state.services, serving, name, records, caller.actor)
        if replayed is None:
            raise
        results = replayed
    position = results[-1].position if results else 0
    response = _answer({"predictions": [_public(r) for r in results], "position": position}, position)
    if replayed is not None:
        response.headers[REPLAYED_HEADER] = "true"
    return response


def _replayed_batch(
    services: Services, serving: Serving, name: str, records: list[PredictRecord], actor: str
) -> list[Served] | None:
    """The recorded answers when every record of the batch is a request this caller made before, else None."""
    if not records or len({record.request_id for record in records}) != len(records):
        return None
    return recorded_answers(services.ledger, services.engine, serving.vault, name, records, actor)


class ReasonCodeBody(BaseModel):
    """One reason of a logged prediction: a feature and its contribution (the value recorded is the input's)."""

    model_config = ConfigDict(extra="forbid")

    feature: str = Field(min_length=1, max_length=MAX_NAME)
    contribution: float = Field(allow_inf_nan=False)
    value: Any = Field(None, description="ignored: the record's input value of the feature is recorded")


class LoggedPredictionBody(BaseModel):
    """One prediction another serving stack made."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(
        max_length=MAX_FEATURES, description="feature name -> value, as the input schema says"
    )
    output: dict[str, Any] = Field(max_length=100, description='what the model answered, e.g. {"label": 1}')
    predicted_at: str = Field(
        min_length=1, max_length=40, description="when the prediction was made (RFC 3339 with a time zone)"
    )
    reason_codes: list[ReasonCodeBody] | None = Field(None, max_length=100)
    request_id: str | None = Field(
        None, min_length=1, max_length=REQUEST_ID_MAX, description="your id for this decision (unique per model)"
    )
    subject_id: str | None = Field(
        None, min_length=1, max_length=SUBJECT_ID_MAX, description="the data subject (the input is then encrypted)"
    )
    latency_ms: float | None = Field(None, ge=0, allow_inf_nan=False, description="as the serving stack measured it")


class PredictionsLogBody(BaseModel):
    """Predictions one version of the model made in one role, elsewhere."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=1_000_000, description="the version that made them")
    role: Literal["champion", "canary"] = Field("champion", description="the role it served them in")
    records: list[LoggedPredictionBody] = Field(max_length=_MAX_RECORDS)


class LoggedPublic(BaseModel):
    """A logged prediction's ids."""

    prediction_id: str
    request_id: str


class PredictionsLogResult(BaseModel):
    """The logged predictions, in the order of the records, and the position of the last event."""

    model_name: str
    version: int
    predictions: list[LoggedPublic]
    position: int


@dataclass(frozen=True, slots=True)
class _LogRequest:
    """A log request's body, read."""

    version: int
    role: str
    records: list[LoggedRecord]


async def log_body(request: Request) -> _LogRequest:
    """The body of a log request, read after the caller is authorized.

    As for ``predict:batch``, a well-formed body is decoded by ``orjson`` and
    checked here in one pass; anything else is read by pydantic
    (:class:`PredictionsLogBody`), which accepts the same bodies and names the problem.
    """
    content_type = request.headers.get("content-type")
    body = await request.body()
    if _is_json(content_type):
        try:
            read = _well_formed_log(orjson.loads(body))
        except orjson.JSONDecodeError:
            read = None
        if read is not None:
            return read
    parsed = parsed_body(PredictionsLogBody, body, content_type)
    records = [
        LoggedRecord(
            input=r.input,
            output=r.output,
            predicted_at=r.predicted_at,
            reason_codes=None if r.reason_codes is None else [c.model_dump(exclude={"value"}) for c in r.reason_codes],
            request_id=r.request_id,
            subject_id=r.subject_id,
            latency_ms=r.latency_ms,
        )
        for r in parsed.records
    ]
    return _LogRequest(parsed.version, parsed.role, records)


_LOG_FIELDS = frozenset(PredictionsLogBody.model_fields)
_LOGGED_FIELDS = frozenset(LoggedPredictionBody.model_fields)
_CODE_FIELDS = frozenset(ReasonCodeBody.model_fields)


def _well_formed_log(data: Any) -> _LogRequest | None:
    """A decoded log body :class:`PredictionsLogBody` accepts as it stands, else None."""
    if type(data) is not dict or not data.keys() <= _LOG_FIELDS:
        return None
    version, role, records = data.get("version"), data.get("role", "champion"), data.get("records")
    if type(version) is not int or not 1 <= version <= 1_000_000 or role not in ("champion", "canary"):
        return None
    if type(records) is not list or len(records) > _MAX_RECORDS:
        return None
    read: list[LoggedRecord] = []
    for record in records:
        if type(record) is not dict or not record.keys() <= _LOGGED_FIELDS:
            return None
        values, output, moment = record.get("input"), record.get("output"), record.get("predicted_at")
        if type(values) is not dict or len(values) > MAX_FEATURES or type(output) is not dict or len(output) > 100:
            return None
        if type(moment) is not str or not 0 < len(moment) <= 40:
            return None
        request_id, subject_id = record.get("request_id"), record.get("subject_id")
        if not (_absent_or_text(request_id, REQUEST_ID_MAX) and _absent_or_text(subject_id, SUBJECT_ID_MAX)):
            return None
        latency = record.get("latency_ms")
        if latency is not None and not (_finite_number(latency) and latency >= 0):
            return None
        codes = record.get("reason_codes")
        if codes is not None:
            if type(codes) is not list or len(codes) > 100:
                return None
            for code in codes:
                if type(code) is not dict or not code.keys() <= _CODE_FIELDS:
                    return None
                if not (_absent_or_text(code.get("feature"), MAX_NAME) and "feature" in code):
                    return None
                if not _finite_number(code.get("contribution")):
                    return None
            codes = [{"feature": c["feature"], "contribution": float(c["contribution"])} for c in codes]
        read.append(LoggedRecord(values, output, moment, codes, request_id, subject_id, latency))
    return _LogRequest(version, role, read)


def _finite_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


@router.post(
    "/models/{name}/predictions:log",
    response_model=PredictionsLogResult,
    status_code=201,
    openapi_extra={"requestBody": _json_body(PredictionsLogBody)},
)
def log_predictions(
    name: NamePath,
    caller: PredictionLogger,
    turn: Braked,
    body: Annotated[_LogRequest, Depends(log_body)],
    serving: ServingDep,
) -> Response:
    """Record predictions another serving stack made (one transaction); refused unless the version served in
    that role when each was made."""
    # Dependencies resolve in this order: the caller is authorized before the body is read.
    with turn:
        batch = serving.log.log(LogAsk(name, body.version, body.role, body.records, caller.actor))
    answer = {
        "model_name": name,
        "version": body.version,
        "predictions": [
            {"prediction_id": p, "request_id": r} for p, r in zip(batch.prediction_ids, batch.request_ids, strict=True)
        ],
        "position": batch.position,
    }
    response = _answer(answer, batch.position)
    response.status_code = 201
    return response


class OutcomeBody(BaseModel):
    """The observed outcome (ground truth) of a prediction."""

    model_config = ConfigDict(extra="forbid")

    outcome: Any = Field(description="the true label or value")


class OverrideBody(BaseModel):
    """A person's decision replacing the model's."""

    model_config = ConfigDict(extra="forbid")

    decision: dict[str, Any] = Field(max_length=100, description='the decision that stands, e.g. {"label": 1}')
    reason: str = Field(min_length=1, max_length=2000)


class EraseBody(BaseModel):
    """Why the subject's data is erased (e.g. an Art. 17 request reference)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


@router.post("/predictions/{prediction_id}/outcome", response_model=WriteResult)
def record_outcome(
    prediction_id: IdPath, body: OutcomeBody, caller: OutcomeRecorder, ledger: LedgerDep, response: Response
) -> dict[str, object]:
    """Record what actually happened, for live accuracy."""
    return written(response, ledger.record_outcome(prediction_id, body.outcome, actor=caller.actor))


@router.post("/predictions/{prediction_id}/override", response_model=WriteResult)
def override(
    prediction_id: IdPath, body: OverrideBody, caller: Overrider, ledger: LedgerDep, response: Response
) -> dict[str, object]:
    """Record a person reversing or replacing the decision, with the reason."""
    return written(response, ledger.override_decision(prediction_id, body.decision, body.reason, actor=caller.actor))


@router.get("/predictions/{reference}", response_model=Decision)
def decision(
    reference: IdPath,
    caller: DecisionReader,
    conn: ConnDep,
    ledger: LedgerDep,
    serving: ServingDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200, description="the model, for a request id")] = None,
) -> Decision:
    """The decision reconstructed, by prediction id or request id."""
    return reconstruct(conn, ledger, serving.vault, reference, model_name=model)


@router.post("/subjects/{subject_id}/erase", response_model=WriteResult)
def erase_subject(
    subject_id: IdPath,
    body: EraseBody,
    caller: SubjectEraser,
    ledger: LedgerDep,
    serving: ServingDep,
    response: Response,
) -> dict[str, object]:
    """Destroy the data subject's key and record a tombstone: their inputs can no longer be read."""
    return written(response, ledger.erase_subject(subject_id, body.reason, serving.vault, actor=caller.actor))
