"""The MLflow-compatible REST API: the stock ``mlflow`` client records experiments,
runs, artifacts and registered models on the ledger, with the ledger's roles and
governance (``MLFLOW_TRACKING_URI`` = the ledger's URL, ``MLFLOW_TRACKING_TOKEN`` =
a ledger API key).

Every error here has MLflow's shape (``{"error_code": ..., "message": ...}``),
which the client raises as ``MlflowException``; the status is the one the
native API gives the same ledger error.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from domain.approval import ApprovalPolicy
from domain.errors import Forbidden, InvalidPayload, LedgerError, NotFound
from domain.experiment import Experiment
from domain.logged_model import LoggedModel
from domain.model import ModelVersion
from domain.permissions import Action
from domain.run import Run
from service.api import mlflow_shapes as shapes
from service.api.deps import LedgerDep, LineageReader, LineageWriter, ServicesDep, current_caller, refuse_oversized
from service.api.mlflow_search import Searchable, matches, page, page_offset, parse_filter, sort_records
from service.application.auth import Caller
from service.application.ledger import Ledger

BATCH_METRICS_MAX = 1000
BATCH_PARAMS_MAX = 100
BATCH_TAGS_MAX = 100
BATCH_TOTAL_MAX = 1000
PARAM_VALUE_MAX = 6000
SEARCH_MAX = 50_000


class MlflowError(BaseModel):
    """An error as MLflow's REST API reports it."""

    error_code: str
    message: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": MlflowError, "description": "an MLflow error"} for code in (400, 401, 403, 404, 409, 413, 422)
}


class MlflowRoute(APIRoute):
    """A route whose errors, authentication and validation included, read as MLflow errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def mlflow_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except LedgerError as error:
                status, body = shapes.error_body(error)
                return JSONResponse(body, status_code=status)
            except RequestValidationError as error:
                detail = "; ".join(str(e.get("msg")) for e in error.errors()) or "invalid request"
                return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": detail}, status_code=400)
            except HTTPException as error:
                code = {413: "INVALID_PARAMETER_VALUE", 404: "ENDPOINT_NOT_FOUND"}.get(error.status_code, "BAD_REQUEST")
                return JSONResponse({"error_code": code, "message": str(error.detail)}, status_code=error.status_code)

        return mlflow_errors


OWN_ERRORS = {"x-own-errors": True}
router = APIRouter(prefix="/api/2.0", tags=["mlflow"], route_class=MlflowRoute, responses=ERROR_RESPONSES)


def _either(*actions: Action) -> Callable[[Caller], Coroutine[Any, Any, Caller]]:
    async def dependency(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        for action in actions:
            try:
                caller.require(action)
            except Forbidden:
                continue
            return caller
        caller.require(actions[0])
        return caller

    return dependency


LabelOrDeploy = Annotated[Caller, Depends(_either(Action.WRITE_LINEAGE, Action.MANAGE_DEPLOYMENTS))]


# -- request parsing -------------------------------------------------------------------------------
async def _message(request: Request) -> dict[str, Any]:
    """The request's fields: the query string, and for a body-carrying method its JSON object."""
    fields: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        fields[key] = values if len(values) > 1 or key in ("experiment_ids", "run_view_type_list") else values[0]
    if request.method in ("POST", "PATCH", "DELETE"):
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise InvalidPayload("the body is not JSON", field="body") from None
            if not isinstance(body, dict):
                raise InvalidPayload("the body must be a JSON object", field="body")
            fields.update(body)
    return fields


Fields = Annotated[dict[str, Any], Depends(_message)]


def _text(fields: dict[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise InvalidPayload(f"missing value for required parameter '{key}'", field=key)
        return default
    if not isinstance(value, str):
        raise InvalidPayload(f"parameter '{key}' must be a string", field=key)
    return value


def _int(fields: dict[str, Any], key: str, default: int | None = None) -> int:
    value = fields.get(key, default)
    if value is None:
        raise InvalidPayload(f"missing value for required parameter '{key}'", field=key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidPayload(f"parameter '{key}' must be an integer", field=key) from None
    return number


def _tags(items: Any, field: str = "tags") -> dict[str, str]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise InvalidPayload(f"{field} must be a list of key/value pairs", field=field)
    tags: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise InvalidPayload(f"{field}.{index} needs a key", field=f"{field}.{index}")
        value = item.get("value", "")
        if not isinstance(value, str):
            raise InvalidPayload(f"{field}.{index}.value must be a string", field=f"{field}.{index}")
        tags[item["key"]] = value
    return tags


def _metric(item: Any, index: int = 0) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise InvalidPayload(f"metrics.{index} needs a key", field=f"metrics.{index}")
    raw = item.get("value")
    try:
        value = float(raw)  # type: ignore[arg-type]  # the client sends NaN and infinities as strings
    except (TypeError, ValueError):
        raise InvalidPayload(f"metric {item['key']!r} needs a numeric value", field=f"metrics.{index}.value") from None
    if not math.isfinite(value):
        raise InvalidPayload(
            f"metric {item['key']!r} is {raw}: the ledger records finite values only", field=f"metrics.{index}.value"
        )
    point: dict[str, Any] = {"key": item["key"], "value": value, "step": _int(item, "step", 0)}
    if item.get("timestamp") is not None:
        point["timestamp"] = str(_int(item, "timestamp"))
    return point


def _params(items: Any) -> dict[str, str]:
    params = _tags(items, "params")
    for key, value in params.items():
        if len(value) > PARAM_VALUE_MAX:
            raise InvalidPayload(f"param {key!r} is longer than {PARAM_VALUE_MAX} characters", field="params")
    return params


def _run(ledger: Ledger, fields: dict[str, Any]) -> Run:
    run_id = _text(fields, "run_id", required=False) or _text(fields, "run_uuid")
    found: Run = ledger.get(run_id, Run)
    return found


def _default_uuid(ledger: Ledger) -> str:
    return str(ledger.experiment_uuid("0"))


def _run_json(ledger: Ledger, run: Run) -> dict[str, Any]:
    return shapes.run_json(run, shapes.run_experiment_id(run, _default_uuid(ledger)))


def _run_id_of_path(path: str) -> tuple[str, str]:
    """``<experiment>/<run>/artifacts/<path>`` -> (run id, path inside the run's artifacts)."""
    parts = path.split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise NotFound(f"no artifact at {path!r}; artifact paths are <experiment>/<run>/artifacts/<path>")
    return parts[1], parts[3] if len(parts) == 4 else ""


def _artifact_target(ledger: Ledger, path: str) -> tuple[str, str, str]:
    """An artifact path of the proxied API -> (run id, the base of the paths it names among that run's
    artifacts, the path under that base). A run's own artifacts are ``<experiment>/<run>/artifacts/<path>``
    (base ""); a logged model's are ``<experiment>/models/<model id>/artifacts/<path>``, kept among its
    source run's artifacts under ``/models/<model id>/``."""
    parts = path.split("/", 4)
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        model = ledger.logged_model(parts[2])
        return model.source_run_id, shapes.logged_model_path(parts[2]), parts[4] if len(parts) == 5 else ""
    run_id, inner = _run_id_of_path(path)
    return run_id, "", inner


# -- experiments -------------------------------------------------------------------------------------
@router.post("/mlflow/experiments/create", openapi_extra=OWN_ERRORS)
def create_experiment(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Create an experiment."""
    written = ledger.create_experiment(_text(fields, "name"), _tags(fields.get("tags")), actor=caller.actor)
    return {"experiment_id": written.id}


@router.get("/mlflow/experiments/get", openapi_extra=OWN_ERRORS)
def get_experiment(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """An experiment by id."""
    experiment_id = _text(fields, "experiment_id")
    experiment = ledger.experiment(experiment_id, actor=caller.actor if experiment_id == "0" else None)
    return {"experiment": shapes.experiment_json(experiment, ledger.experiment_public_id(experiment))}


@router.get("/mlflow/experiments/get-by-name", openapi_extra=OWN_ERRORS)
def get_experiment_by_name(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """An experiment by name."""
    name = _text(fields, "experiment_name")
    try:
        experiment = ledger.experiment_named(name)
    except NotFound:
        raise NotFound(f"no experiment named {name!r}", field="experiment_name") from None
    return {"experiment": shapes.experiment_json(experiment, ledger.experiment_public_id(experiment))}


@router.post("/mlflow/experiments/search", openapi_extra=OWN_ERRORS)
def search_experiments(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Experiments matching a filter (name, tags, times), in order, one page at a time."""
    view = _view_type(fields)
    clauses = parse_filter(fields.get("filter"), ("creation_time", "last_update_time"))
    records = [
        shapes.experiment_record(e, ledger.experiment_public_id(e))
        for e in ledger.experiments()
        if (e.deleted and view != "ACTIVE_ONLY") or (not e.deleted and view != "DELETED_ONLY")
    ]
    chosen = [r for r in records if matches(clauses, r)]
    ordered = sort_records(chosen, list(fields.get("order_by") or []), [("attributes", "creation_time", True)])
    items, token = page(ordered, fields.get("page_token"), _max_results(fields, 1000))
    answer: dict[str, Any] = {"experiments": [shapes.experiment_json(*r.subject) for r in items]}
    if token:
        answer["next_page_token"] = token
    return answer


@router.post("/mlflow/experiments/delete", openapi_extra=OWN_ERRORS)
def delete_experiment(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Mark an experiment deleted (an event; it and its runs stay on the ledger)."""
    ledger.delete_experiment(_text(fields, "experiment_id"), actor=caller.actor)
    return {}


@router.post("/mlflow/experiments/restore", openapi_extra=OWN_ERRORS)
def restore_experiment(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Restore a deleted experiment."""
    ledger.restore_experiment(_text(fields, "experiment_id"), actor=caller.actor)
    return {}


@router.post("/mlflow/experiments/set-experiment-tag", openapi_extra=OWN_ERRORS)
def set_experiment_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set a tag of an experiment."""
    ledger.set_experiment_tag(
        _text(fields, "experiment_id"), _text(fields, "key"), _text(fields, "value", required=False), caller.actor
    )
    return {}


def _view_type(fields: dict[str, Any]) -> str:
    view = fields.get("run_view_type") or fields.get("view_type") or "ACTIVE_ONLY"
    view = {"1": "ACTIVE_ONLY", "2": "DELETED_ONLY", "3": "ALL"}.get(str(view), str(view))
    if view not in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL"):
        raise InvalidPayload("view type must be ACTIVE_ONLY, DELETED_ONLY or ALL", field="run_view_type")
    return view


def _max_results(fields: dict[str, Any], default: int) -> int:
    number = _int(fields, "max_results", default)
    if not 1 <= number <= SEARCH_MAX:
        raise InvalidPayload(f"max_results must be between 1 and {SEARCH_MAX}", field="max_results")
    return number


# -- runs --------------------------------------------------------------------------------------------
@router.post("/mlflow/runs/create", openapi_extra=OWN_ERRORS)
def create_run(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Start a client-reported run filed under an experiment, with its tags."""
    tags = _tags(fields.get("tags"))
    name = _text(fields, "run_name", required=False) or tags.get("mlflow.runName", "")
    if name:
        tags["mlflow.runName"] = name
    written = ledger.start_tracked_run(
        _text(fields, "experiment_id", required=False, default="0"), name, tags, actor=caller.actor
    )
    return {"run": _run_json(ledger, ledger.get(written.id, Run))}


@router.post("/mlflow/runs/update", openapi_extra=OWN_ERRORS)
def update_run(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """End a run (FINISHED, FAILED, KILLED) and/or rename it."""
    run = _run(ledger, fields)
    status = fields.get("status")
    if status is not None and status not in (*shapes.END_STATUS, "RUNNING", "SCHEDULED"):
        raise InvalidPayload(f"unknown run status {status!r}", field="status")
    ledger.end_tracked_run(
        str(run.id), shapes.END_STATUS.get(str(status)), _text(fields, "run_name", required=False), caller.actor
    )
    return {"run_info": _run_json(ledger, ledger.get(run.id, Run))["info"]}


@router.get("/mlflow/runs/get", openapi_extra=OWN_ERRORS)
def get_run(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """A run with its latest metrics, params and tags."""
    return {"run": _run_json(ledger, _run(ledger, fields))}


@router.post("/mlflow/runs/search", openapi_extra=OWN_ERRORS)
def search_runs(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Runs of experiments matching an MLflow filter string, in ``order_by`` order, one page at a time."""
    experiment_ids = fields.get("experiment_ids") or []
    if isinstance(experiment_ids, str):
        experiment_ids = [experiment_ids]
    view = _view_type(fields)
    clauses = parse_filter(fields.get("filter"), ("start_time", "end_time"))
    order_by = fields.get("order_by") or []
    max_results = _max_results(fields, 1000)
    offset = page_offset(fields.get("page_token"))
    # Without a filter or an order, a page needs only each experiment's newest runs (runs are filed in the order
    # they start): the search reads offset + max_results + 1 of them, not every run of the experiment.
    bound = offset + max_results + 1 if not clauses and not order_by else None
    records = []
    for experiment_id in experiment_ids:
        experiment: Experiment = (
            ledger.experiment(str(experiment_id), actor=None)
            if str(experiment_id) != "0"
            else (ledger.experiment("0", actor=caller.actor))
        )
        records.extend(_experiment_runs(ledger, experiment, view, bound))
    chosen = [r for r in records if matches(clauses, r)]
    default = [("attributes", "start_time", True), ("attributes", "run_id", False)]
    ordered = sort_records(chosen, list(order_by), default)
    items, token = page(ordered, fields.get("page_token"), max_results)
    answer: dict[str, Any] = {"runs": [shapes.run_json(*r.subject) for r in items]}
    if token:
        answer["next_page_token"] = token
    return answer


def _experiment_runs(ledger: Ledger, experiment: Experiment, view: str, bound: int | None) -> list[Searchable]:
    """The experiment's runs of the view, newest first: all of them, or with ``bound`` the newest ``bound``
    (and any started in the same millisecond as the last one taken, so ties sort as in a full search)."""
    public_id = ledger.experiment_public_id(experiment)
    records: list[Searchable] = []
    for run_id in reversed(experiment.run_ids):
        run: Run = ledger.get(run_id, Run)
        if (run.deleted and view == "ACTIVE_ONLY") or (not run.deleted and view == "DELETED_ONLY"):
            continue
        record = shapes.run_record(run, public_id)
        full = bound is not None and len(records) >= bound
        if full and record.attributes["start_time"] != records[-1].attributes["start_time"]:
            break
        records.append(record)
    return records


@router.post("/mlflow/runs/delete", openapi_extra=OWN_ERRORS)
def delete_run(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Mark a run deleted (a tombstone event; nothing is erased)."""
    ledger.delete_run(str(_run(ledger, fields).id), actor=caller.actor)
    return {}


@router.post("/mlflow/runs/restore", openapi_extra=OWN_ERRORS)
def restore_run(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Restore a deleted run."""
    ledger.restore_run(str(_run(ledger, fields).id), actor=caller.actor)
    return {}


@router.post("/mlflow/runs/log-metric", openapi_extra=OWN_ERRORS)
def log_metric(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record one metric point."""
    run = _run(ledger, fields)
    ledger.record_batch(str(run.id), {}, [_metric(fields)], {}, actor=caller.actor)
    return {}


@router.post("/mlflow/runs/log-parameter", openapi_extra=OWN_ERRORS)
def log_parameter(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record one parameter (a key keeps its first value)."""
    run = _run(ledger, fields)
    params = _params([{"key": _text(fields, "key"), "value": _text(fields, "value", required=False)}])
    ledger.record_batch(str(run.id), params, [], {}, actor=caller.actor)
    return {}


@router.post("/mlflow/runs/set-tag", openapi_extra=OWN_ERRORS)
def set_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set one tag of a run."""
    run = _run(ledger, fields)
    tags = _tags([{"key": _text(fields, "key"), "value": _text(fields, "value", required=False)}])
    ledger.record_batch(str(run.id), {}, [], tags, actor=caller.actor)
    return {}


@router.post("/mlflow/runs/log-batch", openapi_extra=OWN_ERRORS)
def log_batch(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record metrics, params and tags in one transaction: all of them, or (on any bad item) none."""
    metrics_in = fields.get("metrics") or []
    params_in = fields.get("params") or []
    tags_in = fields.get("tags") or []
    if not all(isinstance(x, list) for x in (metrics_in, params_in, tags_in)):
        raise InvalidPayload("metrics, params and tags must be lists", field="body")
    limits = (
        (metrics_in, BATCH_METRICS_MAX, "metrics"),
        (params_in, BATCH_PARAMS_MAX, "params"),
        (tags_in, BATCH_TAGS_MAX, "tags"),
    )
    for items, limit, name in limits:
        if len(items) > limit:
            raise InvalidPayload(f"a batch holds at most {limit} {name}; got {len(items)}", field=name)
    if len(metrics_in) + len(params_in) + len(tags_in) > BATCH_TOTAL_MAX:
        raise InvalidPayload(f"a batch holds at most {BATCH_TOTAL_MAX} items in all", field="body")
    run = _run(ledger, fields)
    metrics = [_metric(m, i) for i, m in enumerate(metrics_in)]
    ledger.record_batch(str(run.id), _params(params_in), metrics, _tags(tags_in), actor=caller.actor)
    return {}


@router.get("/mlflow/metrics/get-history", openapi_extra=OWN_ERRORS)
def metric_history(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Every recorded point of one metric of a run."""
    run = _run(ledger, fields)
    points = ledger.metric_history(run, _text(fields, "metric_key"))
    return {"metrics": [shapes.metric_json(p, run) for p in points]}


@router.post("/mlflow/runs/log-inputs", openapi_extra=OWN_ERRORS)
def log_inputs(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record the datasets (name, digest, source) and logged models a run used."""
    run = _run(ledger, fields)
    datasets_in = fields.get("datasets") or []
    models_in = fields.get("models") or []
    if not isinstance(datasets_in, list) or not isinstance(models_in, list):
        raise InvalidPayload("datasets and models must be lists", field="body")
    if len(datasets_in) + len(models_in) > BATCH_TOTAL_MAX:
        raise InvalidPayload(f"at most {BATCH_TOTAL_MAX} inputs at once", field="body")
    datasets = [_dataset_input(item, index) for index, item in enumerate(datasets_in)]
    model_ids = [_model_ref(item, f"models.{index}") for index, item in enumerate(models_in)]
    ledger.log_inputs(str(run.id), datasets, model_ids, actor=caller.actor)
    return {}


@router.post("/mlflow/runs/outputs", openapi_extra=OWN_ERRORS)
def log_outputs(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record the logged models a run produced (each at a step)."""
    run = _run(ledger, fields)
    models_in = fields.get("models") or []
    if not isinstance(models_in, list) or len(models_in) > BATCH_TOTAL_MAX:
        raise InvalidPayload(f"models must be a list of at most {BATCH_TOTAL_MAX}", field="models")
    models = []
    for index, item in enumerate(models_in):
        step = _int(item, "step", 0) if isinstance(item, dict) else 0
        models.append({"model_id": _model_ref(item, f"models.{index}"), "step": step})
    ledger.log_outputs(str(run.id), models, actor=caller.actor)
    return {}


DATASET_FIELD_MAX = {"name": 500, "digest": 36, "source_type": 36, "source": 65_535, "schema": 1_048_576}
DATASET_FIELD_MAX["profile"] = 16_384


def _dataset_input(item: Any, index: int) -> dict[str, Any]:
    """A dataset input: {name, digest, source_type, source, schema?, profile?, tags}, every field bounded."""
    where = f"datasets.{index}"
    dataset = item.get("dataset") if isinstance(item, dict) else None
    if not isinstance(dataset, dict):
        raise InvalidPayload(f"{where} needs a dataset", field=where)
    recorded: dict[str, Any] = {}
    for key, limit in DATASET_FIELD_MAX.items():
        value = dataset.get(key)
        required = key in ("name", "digest", "source_type", "source")
        if value is None or value == "":
            if required:
                raise InvalidPayload(f"{where}.dataset.{key} is required", field=f"{where}.dataset.{key}")
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidPayload(f"{where}.dataset.{key} must be a string of at most {limit}", field=where)
        recorded[key] = value
    recorded["tags"] = _tags(item.get("tags"), f"{where}.tags")
    return recorded


def _model_ref(item: Any, where: str) -> str:
    model_id = item.get("model_id") if isinstance(item, dict) else None
    if not isinstance(model_id, str) or not model_id:
        raise InvalidPayload(f"{where} needs a model_id", field=where)
    return model_id


# -- logged models (MLflow 3) ------------------------------------------------------------------------
def _experiment_public(ledger: Ledger, experiment_uuid: str) -> str:
    return "0" if experiment_uuid == _default_uuid(ledger) else experiment_uuid


def _logged_model_json(ledger: Ledger, model_id: str) -> dict[str, Any]:
    model = ledger.logged_model(model_id)
    return shapes.logged_model_json(model, _experiment_public(ledger, model.experiment_id), [])


def _key_values(items: Any, field: str) -> dict[str, str]:
    return _tags(items, field)


@router.post("/mlflow/logged-models", openapi_extra=OWN_ERRORS)
def create_logged_model(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Log a model from an open run (pending until finalized; its files go among the run's artifacts)."""
    source_run_id = _text(fields, "source_run_id", required=False)
    if not source_run_id:
        raise InvalidPayload(
            "a logged model is recorded with the run that produced it: log it inside a run", field="source_run_id"
        )
    written = ledger.create_logged_model(
        experiment_id=_text(fields, "experiment_id"),
        name=_text(fields, "name", required=False) or "model",
        source_run_id=source_run_id,
        model_type=_text(fields, "model_type", required=False),
        params=_key_values(fields.get("params"), "params"),
        tags=_tags(fields.get("tags")),
        actor=caller.actor,
    )
    model_id = ledger.logged_model_public_id(ledger.get(uuid.UUID(written.id), LoggedModel))
    return {"model": _logged_model_json(ledger, model_id)}


@router.get("/mlflow/logged-models/{model_id}", openapi_extra=OWN_ERRORS)
def get_logged_model(model_id: str, caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """A logged model (a deleted one only with ``allow_deleted=true``)."""
    model = ledger.logged_model(model_id)
    if model.deleted and str(fields.get("allow_deleted", "")).lower() != "true":
        raise NotFound(f"logged model {model_id} is deleted", field="model_id")
    return {"model": _logged_model_json(ledger, model_id)}


@router.patch("/mlflow/logged-models/{model_id}", openapi_extra=OWN_ERRORS)
def finalize_logged_model(model_id: str, caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """End a logged model's upload: READY or UPLOAD_FAILED."""
    status = _text(fields, "status").removeprefix("LOGGED_MODEL_")
    ledger.change_logged_model(model_id, caller.actor, status=status)
    return {"model": _logged_model_json(ledger, model_id)}


@router.delete("/mlflow/logged-models/{model_id}", openapi_extra=OWN_ERRORS)
def delete_logged_model(model_id: str, caller: LineageWriter, ledger: LedgerDep) -> dict[str, Any]:
    """Mark a logged model deleted (an event; its record and files stay)."""
    ledger.change_logged_model(model_id, caller.actor, delete=True)
    return {}


@router.post("/mlflow/logged-models/{model_id}/params", openapi_extra=OWN_ERRORS)
def log_logged_model_params(model_id: str, caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Record parameters of a logged model."""
    params = _key_values(fields.get("params"), "params")
    if len(params) > BATCH_PARAMS_MAX:
        raise InvalidPayload(f"at most {BATCH_PARAMS_MAX} params at once", field="params")
    ledger.change_logged_model(model_id, caller.actor, params=params)
    return {}


@router.patch("/mlflow/logged-models/{model_id}/tags", openapi_extra=OWN_ERRORS)
def set_logged_model_tags(model_id: str, caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set tags of a logged model."""
    tags: dict[str, str | None] = dict(_tags(fields.get("tags")))
    if len(tags) > BATCH_TAGS_MAX:
        raise InvalidPayload(f"at most {BATCH_TAGS_MAX} tags at once", field="tags")
    ledger.change_logged_model(model_id, caller.actor, tags=tags)
    return {}


@router.delete("/mlflow/logged-models/{model_id}/tags/{tag_key:path}", openapi_extra=OWN_ERRORS)
def delete_logged_model_tag(model_id: str, tag_key: str, caller: LineageWriter, ledger: LedgerDep) -> dict[str, Any]:
    """Remove a tag of a logged model (an event)."""
    if tag_key not in ledger.logged_model(model_id).tags:
        raise NotFound(f"logged model {model_id} has no tag {tag_key!r}", field="tag_key")
    ledger.change_logged_model(model_id, caller.actor, tags={tag_key: None})
    return {}


@router.post("/mlflow/logged-models/search", openapi_extra=OWN_ERRORS)
def search_logged_models(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Logged models of experiments matching a filter (``name``, ``params.*``, ``tags.*``, attributes)."""
    experiment_ids = fields.get("experiment_ids") or []
    if isinstance(experiment_ids, str):
        experiment_ids = [experiment_ids]
    if not isinstance(experiment_ids, list) or not all(isinstance(e, str) for e in experiment_ids):
        raise InvalidPayload("experiment_ids must be a list of ids", field="experiment_ids")
    clauses = parse_filter(fields.get("filter"), ("creation_timestamp", "creation_time", "last_updated_timestamp"))
    order_in = fields.get("order_by") or []
    if not isinstance(order_in, list):
        raise InvalidPayload("order_by must be a list", field="order_by")
    order_by = []
    for item in order_in:
        if not isinstance(item, dict) or not isinstance(item.get("field_name"), str):
            raise InvalidPayload("each order_by needs a field_name", field="order_by")
        order_by.append(f"{item['field_name']} {'ASC' if item.get('ascending', True) else 'DESC'}")
    records = [
        shapes.logged_model_record(model, public)
        for model, public in ledger.logged_models([str(e) for e in experiment_ids])
        if not model.deleted
    ]
    chosen = sort_records(
        [r for r in records if matches(clauses, r)], order_by, [("attributes", "creation_timestamp", True)]
    )
    items, token = page(chosen, fields.get("page_token"), _max_results(fields, 100))
    answer: dict[str, Any] = {"models": [shapes.logged_model_json(m, e, []) for m, e in (r.subject for r in items)]}
    if token:
        answer["next_page_token"] = token
    return answer


# -- artifacts (the proxied artifact API) ------------------------------------------------------------
@router.put("/mlflow-artifacts/artifacts/{artifact_path:path}", openapi_extra=OWN_ERRORS)
async def upload_artifact(
    artifact_path: str, request: Request, caller: LineageWriter, services: ServicesDep
) -> dict[str, Any]:
    """Upload a run artifact (streamed to the content-addressed store) and record it on the run."""
    limit = services.settings.max_upload_bytes
    refuse_oversized(request, limit, "body")
    run_id, base, inner = _artifact_target(services.ledger, artifact_path)
    name = shapes.artifact_name(base + shapes.check_artifact_path(inner))
    if base:
        model = services.ledger.logged_model(shapes.logged_model_of(base) or "")
        model.check_active()
        if model.status != "PENDING":
            raise InvalidPayload(f"logged model {model.name!r} is {model.status}: its files are final", field="path")
    run: Run = services.ledger.get(run_id, Run)
    run.check_open()
    if name in run.artifacts:
        raise InvalidPayload(f"artifact {inner!r} was already recorded", field="path")
    blob = await services.blobs.put_async_chunks(request.stream(), max_bytes=limit)
    media_type = request.headers.get("content-type", "application/octet-stream")[:200]
    services.ledger.record_artifact(run_id, name, blob.digest, blob.size, media_type, actor=caller.actor)
    return {}


@router.get("/mlflow-artifacts/artifacts/{artifact_path:path}", openapi_extra=OWN_ERRORS, response_model=None)
def download_artifact(artifact_path: str, caller: LineageReader, services: ServicesDep) -> StreamingResponse:
    """Download a run artifact (its digest is checked before the first byte is sent)."""
    run_id, base, inner = _artifact_target(services.ledger, artifact_path)
    run: Run = services.ledger.get(run_id, Run)
    digest = run.artifacts.get(shapes.artifact_name(base + inner))
    if digest is None:
        raise NotFound(f"run {run_id} has no artifact {inner!r}", field="path")
    chunks = services.blobs.read_verified(digest)
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"X-Content-Digest": digest})


@router.get("/mlflow-artifacts/artifacts", openapi_extra=OWN_ERRORS)
def list_artifacts(caller: LineageReader, fields: Fields, services: ServicesDep) -> dict[str, Any]:
    """The files and directories directly under a path of a run's artifacts."""
    run_id, base, inner = _artifact_target(services.ledger, _text(fields, "path"))
    run: Run = services.ledger.get(run_id, Run)
    prefix = f"{inner.rstrip('/')}/" if inner else ""
    entries: dict[str, dict[str, Any]] = {}
    for name, digest in run.artifacts.items():
        full = shapes.artifact_path(name)
        if base and not full.startswith(base):
            continue
        if not base and shapes.logged_model_of(full) is not None:
            continue  # a logged model's file, listed under the model
        path = full.removeprefix(base)
        if path == inner:
            size = services.blobs.path_of(digest).stat().st_size if services.blobs.exists(digest) else None
            entries[path.rsplit("/", 1)[-1]] = {"path": path.rsplit("/", 1)[-1], "is_dir": False, "file_size": size}
            continue
        if not path.startswith(prefix):
            continue
        head, slash, _ = path[len(prefix) :].partition("/")
        if slash:
            entries.setdefault(head, {"path": head, "is_dir": True})
        else:
            size = services.blobs.path_of(digest).stat().st_size if services.blobs.exists(digest) else None
            entries[head] = {"path": head, "is_dir": False, "file_size": size}
    return {"files": [entries[k] for k in sorted(entries)]}


# -- registered models and versions ------------------------------------------------------------------
def _version_json(ledger: Ledger, version: ModelVersion) -> dict[str, Any]:
    run: Run = ledger.get(version.run_id, Run)
    experiment_id = shapes.run_experiment_id(run, _default_uuid(ledger))
    champion = shapes.champion_of(ledger.deployment_of(version.model_name))
    return shapes.version_json(version, ledger.labels(version.model_name), champion, experiment_id)


def _model_json(ledger: Ledger, name: str) -> dict[str, Any]:
    model = ledger.model(name)
    versions = [_version_json(ledger, ledger.get(v, ModelVersion)) for v in model.versions]
    latest: dict[str, dict[str, Any]] = {}
    for version in versions:
        latest[version["current_stage"]] = version
    champion = shapes.champion_of(ledger.deployment_of(name))
    return shapes.model_json(model, ledger.labels(name), champion, list(latest.values()))


def _version_number(fields: dict[str, Any]) -> int:
    number = _int(fields, "version")
    if not 1 <= number <= 1_000_000:
        raise InvalidPayload("version must be between 1 and 1000000", field="version")
    return number


@router.post("/mlflow/registered-models/create", openapi_extra=OWN_ERRORS)
def create_registered_model(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Create a model (default approval policy) before its first version."""
    name = _text(fields, "name")
    policy = ApprovalPolicy.from_dict(None).to_dict()
    ledger.create_registered_model(
        name, _text(fields, "description", required=False), _tags(fields.get("tags")), policy, actor=caller.actor
    )
    return {"registered_model": _model_json(ledger, name)}


@router.get("/mlflow/registered-models/get", openapi_extra=OWN_ERRORS)
def get_registered_model(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """A model with its latest versions, tags and aliases (``champion``: the deployed champion)."""
    return {"registered_model": _model_json(ledger, _text(fields, "name"))}


@router.get("/mlflow/registered-models/search", openapi_extra=OWN_ERRORS)
def search_registered_models(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Models matching a filter (``name``, ``tags.*``), by name, one page at a time."""
    clauses = parse_filter(fields.get("filter"))
    records = []
    for model in ledger.models():
        labels = ledger.labels(model.name)
        tags = labels.tags.get(None, {}) if labels else {}
        records.append(Searchable(tags=dict(tags), attributes={"name": model.name}, subject=model.name))
    chosen = [r for r in records if matches(clauses, r, absent_negates=True)]
    chosen = sort_records(chosen, list(fields.get("order_by") or []), [])
    chosen = sorted(chosen, key=lambda r: str(r.subject)) if not fields.get("order_by") else chosen
    items, token = page(chosen, fields.get("page_token"), _max_results(fields, 100))
    answer: dict[str, Any] = {"registered_models": [_model_json(ledger, r.subject) for r in items]}
    if token:
        answer["next_page_token"] = token
    return answer


@router.patch("/mlflow/registered-models/update", openapi_extra=OWN_ERRORS)
def update_registered_model(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set a model's description."""
    name = _text(fields, "name")
    ledger.label_model(name, caller.actor, description=_text(fields, "description", required=False))
    return {"registered_model": _model_json(ledger, name)}


@router.post("/mlflow/registered-models/set-tag", openapi_extra=OWN_ERRORS)
def set_registered_model_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set a tag of a model."""
    tag = (_text(fields, "key"), _text(fields, "value", required=False))
    ledger.label_model(_text(fields, "name"), caller.actor, tag=tag)
    return {}


@router.delete("/mlflow/registered-models/delete-tag", openapi_extra=OWN_ERRORS)
def delete_registered_model_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Remove a tag of a model (an event)."""
    ledger.label_model(_text(fields, "name"), caller.actor, tag=(_text(fields, "key"), None))
    return {}


@router.post("/mlflow/registered-models/alias", openapi_extra=OWN_ERRORS)
def set_alias(caller: LabelOrDeploy, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Point an alias at a version; ``champion`` deploys it, for an approved version only."""
    alias = _text(fields, "alias")
    caller.require(Action.MANAGE_DEPLOYMENTS if alias == "champion" else Action.WRITE_LINEAGE)
    ledger.set_alias(_text(fields, "name"), alias, _version_number(fields), actor=caller.actor)
    return {}


@router.delete("/mlflow/registered-models/alias", openapi_extra=OWN_ERRORS)
def delete_alias(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Remove an alias (the champion is never removed: deploy another version or stop the deployment)."""
    ledger.delete_alias(_text(fields, "name"), _text(fields, "alias"), actor=caller.actor)
    return {}


@router.get("/mlflow/registered-models/alias", openapi_extra=OWN_ERRORS)
def get_version_by_alias(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """The version an alias names."""
    name, alias = _text(fields, "name"), _text(fields, "alias")
    model = _model_json(ledger, name)
    number = next((int(a["version"]) for a in model["aliases"] if a["alias"] == alias), None)
    if number is None:
        raise NotFound(f"model {name} has no alias {alias!r}", field="alias")
    return {"model_version": _version_json(ledger, ledger.model_version(name, number))}


@router.post("/mlflow/registered-models/get-latest-versions", openapi_extra=OWN_ERRORS)
def get_latest_versions(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """The latest version of each stage (of the stages asked for)."""
    latest = _model_json(ledger, _text(fields, "name"))["latest_versions"]
    stages = fields.get("stages") or []
    return {"model_versions": [v for v in latest if not stages or v["current_stage"] in stages]}


@router.post("/mlflow/model-versions/create", openapi_extra=OWN_ERRORS)
def create_model_version(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Register the next version from a succeeded run's artifacts: a model directory (its MLmodel file is the
    version's artifact, and the run digest the approvals sign commits to every file) or a single file."""
    name = _text(fields, "name")
    run_id = _text(fields, "run_id", required=False)
    source = _text(fields, "source")
    model_id = _text(fields, "model_id", required=False)
    if source.startswith("models:/") and not model_id:
        model_id = source.removeprefix("models:/").strip("/")
    if model_id:
        try:
            logged = ledger.logged_model(model_id)
        except NotFound:
            raise InvalidPayload(f"no logged model {model_id}", field="model_id") from None
        if logged.status != "READY" or logged.deleted:
            detail = "deleted" if logged.deleted else logged.status
            raise InvalidPayload(f"logged model {model_id} is {detail}; register a READY one", field="model_id")
        if run_id and run_id != logged.source_run_id:
            raise InvalidPayload("the logged model was not produced by the given run", field="run_id")
        run_id = logged.source_run_id
        inner = shapes.logged_model_path(model_id)
    elif source.startswith("mlflow-artifacts:/"):
        source_run, inner = _run_id_of_path(source.removeprefix("mlflow-artifacts:/").lstrip("/"))
        run_id = run_id or source_run
        if source_run != run_id:
            raise InvalidPayload("the source is not an artifact of the given run", field="source")
    elif source.startswith("runs:/"):
        source_run, _, inner = source.removeprefix("runs:/").partition("/")
        run_id = run_id or source_run
    else:
        raise InvalidPayload(
            "source must be a run's artifact (runs:/ or mlflow-artifacts:/) or a logged model (models:/<id>)",
            field="source",
        )
    try:
        run: Run = ledger.get(run_id, Run)
    except NotFound:
        raise InvalidPayload(f"no run {run_id}", field="run_id") from None
    inner = inner.rstrip("/") if model_id else inner.strip("/")
    candidates = [f"{inner}/{shapes.MLMODEL}" if inner else shapes.MLMODEL, inner]
    names = [shapes.artifact_name(c) for c in candidates if c]
    artifact = next((n for n in names if n in run.artifacts), None)
    if artifact is None:
        raise InvalidPayload(f"run {run_id} has no model directory or file at {inner!r}", field="source")
    written = ledger.register_model_version(
        model_name=name, run_id=run_id, artifact_name=artifact, input_schema=[], policy=None, actor=caller.actor
    )
    version: ModelVersion = ledger.get(written.id, ModelVersion)
    description = _text(fields, "description", required=False)
    if description:
        ledger.label_model(name, caller.actor, version=version.number, description=description)
    for key, value in _tags(fields.get("tags")).items():
        ledger.label_model(name, caller.actor, version=version.number, tag=(key, value))
    return {"model_version": _version_json(ledger, version)}


@router.get("/mlflow/model-versions/get", openapi_extra=OWN_ERRORS)
def get_model_version(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """A model version; its stage is Production exactly when it is the deployed champion."""
    version = ledger.model_version(_text(fields, "name"), _version_number(fields))
    return {"model_version": _version_json(ledger, version)}


@router.get("/mlflow/model-versions/search", openapi_extra=OWN_ERRORS)
def search_model_versions(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Versions matching a filter (``name``, ``run_id``, ``version_number``, ``tags.*``)."""
    clauses = parse_filter(fields.get("filter"), ("version_number",))
    records = []
    for model in ledger.models():
        for version_id in model.versions:
            shown = _version_json(ledger, ledger.get(version_id, ModelVersion))
            tags = {t["key"]: t["value"] for t in shown["tags"]}
            attributes = {"name": shown["name"], "run_id": shown["run_id"], "source": shown["source"]}
            attributes["version_number"] = int(shown["version"])
            records.append(Searchable(tags=tags, attributes=attributes, subject=shown))
    chosen = sort_records(
        [r for r in records if matches(clauses, r, absent_negates=True)],
        list(fields.get("order_by") or []),
        [("attributes", "name", False), ("attributes", "version_number", True)],
    )
    items, token = page(chosen, fields.get("page_token"), _max_results(fields, 10_000))
    answer: dict[str, Any] = {"model_versions": [r.subject for r in items]}
    if token:
        answer["next_page_token"] = token
    return answer


@router.patch("/mlflow/model-versions/update", openapi_extra=OWN_ERRORS)
def update_model_version(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set a version's description."""
    name, number = _text(fields, "name"), _version_number(fields)
    ledger.label_model(name, caller.actor, version=number, description=_text(fields, "description", required=False))
    return {"model_version": _version_json(ledger, ledger.model_version(name, number))}


@router.post("/mlflow/model-versions/transition-stage", openapi_extra=OWN_ERRORS)
def transition_stage(caller: LabelOrDeploy, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Label a version's stage; Production deploys it as champion, for an approved version only."""
    stage = _text(fields, "stage")
    stage = {s.lower(): s for s in ("None", "Staging", "Production", "Archived")}.get(stage.lower(), stage)
    caller.require(Action.MANAGE_DEPLOYMENTS if stage == "Production" else Action.WRITE_LINEAGE)
    name, number = _text(fields, "name"), _version_number(fields)
    ledger.transition_stage(name, number, stage, actor=caller.actor)
    return {"model_version": _version_json(ledger, ledger.model_version(name, number))}


@router.post("/mlflow/model-versions/set-tag", openapi_extra=OWN_ERRORS)
def set_model_version_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Set a tag of a version."""
    tag = (_text(fields, "key"), _text(fields, "value", required=False))
    ledger.label_model(_text(fields, "name"), caller.actor, version=_version_number(fields), tag=tag)
    return {}


@router.delete("/mlflow/model-versions/delete-tag", openapi_extra=OWN_ERRORS)
def delete_model_version_tag(caller: LineageWriter, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Remove a tag of a version (an event)."""
    tag = (_text(fields, "key"), None)
    ledger.label_model(_text(fields, "name"), caller.actor, version=_version_number(fields), tag=tag)
    return {}


@router.get("/mlflow/model-versions/get-download-uri", openapi_extra=OWN_ERRORS)
def get_download_uri(caller: LineageReader, fields: Fields, ledger: LedgerDep) -> dict[str, Any]:
    """Where a version's files are (the run's artifacts, through the proxied artifact API)."""
    version = ledger.model_version(_text(fields, "name"), _version_number(fields))
    run: Run = ledger.get(version.run_id, Run)
    return {"artifact_uri": shapes.version_download_uri(version, shapes.run_experiment_id(run, _default_uuid(ledger)))}
