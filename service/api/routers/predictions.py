"""Serving predictions, and what happens to them afterwards: outcomes, overrides, erasure, reconstruction."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from service.api.deps import (
    POSITION_HEADER,
    ConnDep,
    DecisionReader,
    LedgerDep,
    OutcomeRecorder,
    Overrider,
    PredictingKey,
    Predictor,
    SubjectEraser,
    written,
)
from service.api.schemas import WriteResult
from service.serving.decisions import Decision, reconstruct
from service.serving.predict import PredictRecord, Served
from service.serving.runtime import Serving

router = APIRouter(prefix="/v1", tags=["predictions"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
IdPath = Annotated[str, Path(min_length=1, max_length=200)]
MAX_FEATURES = 10_000


async def get_serving(request: Request) -> Serving:
    """The process's serving parts."""
    serving: Serving = request.app.state.serving
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


class PredictBody(BaseModel):
    """One record to predict."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(
        max_length=MAX_FEATURES, description="feature name -> value, as the input schema says"
    )
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="your id for this decision (unique per model); default: generated",
    )
    subject_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the data subject the input is about: the input is then encrypted with their key (erasable)",
    )


class PredictBatchBody(BaseModel):
    """Many records to predict in one request (one transaction)."""

    model_config = ConfigDict(extra="forbid")

    records: list[PredictBody] = Field(max_length=100_000)


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


@router.post("/models/{name}/predict", response_model=PredictResult)
async def predict(name: NamePath, key: PredictingKey, body: PredictBody, serving: ServingDep) -> Response:
    """Predict one record with the deployed model; the answer comes after its signed event is durable."""
    # Served on the event loop: the predict queue's thread serves the concurrent requests together.
    result = await serving.queue.predict(name, _record(body), key)
    return _answer({**_public(result), "position": result.position}, result.position)


async def batch_body(request: Request) -> PredictBatchBody:
    """The batch body parsed and validated by pydantic in one pass.

    A batch is large (1,000 records of 30 features are about 860 KB); reading
    it straight into the model is about three times faster than decoding the
    JSON first and validating the objects after. Errors are reported as
    FastAPI reports a body it validates itself.
    """
    try:
        return PredictBatchBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


_BATCH_SCHEMA = {
    key: value
    for key, value in PredictBatchBody.model_json_schema(ref_template="#/components/schemas/{model}").items()
    if key != "$defs"  # PredictBody is in the components already (the single-record body)
}


@router.post(
    "/models/{name}/predict:batch",
    response_model=PredictBatchResult,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _BATCH_SCHEMA}}, "required": True}},
)
def predict_batch(
    name: NamePath, caller: Predictor, body: Annotated[PredictBatchBody, Depends(batch_body)], serving: ServingDep
) -> Response:
    """Predict many records in one request: one transaction, one batch of signatures."""
    # Dependencies resolve in this order: the caller is authorized before the body is read.
    results = serving.predictor.predict(name, [_record(r) for r in body.records], caller.actor)
    position = results[-1].position if results else 0
    return _answer({"predictions": [_public(r) for r in results], "position": position}, position)


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
