"""How ledger records read to an MLflow client: the JSON of MLflow's REST API
(experiments, runs, registered models, model versions, errors), and how MLflow's
artifact paths become ledger artifact names.

Times are milliseconds since the epoch, as MLflow's protos carry them; ids are
the ledger's own (a run id is its aggregate id), except the default
experiment, whose MLflow id is "0".
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from domain.deployment import Deployment
from domain.errors import (
    ApprovalRequired,
    Forbidden,
    InvalidPayload,
    LedgerError,
    NotFound,
    PayloadTooLarge,
    RuleViolated,
    Unauthenticated,
    VersionConflict,
)
from domain.experiment import Experiment
from domain.logged_model import LoggedModel, public_id
from domain.model import Model, ModelVersion
from domain.model_labels import CHAMPION_ALIAS, PRODUCTION_STAGE, ModelLabels
from domain.run import Run, RunStatus
from service.api.errors import http_status
from service.api.mlflow_search import Searchable
from service.application.commands.tracking import AlreadyExists

MLMODEL = "MLmodel"
LOGGED_MODELS_DIR = "/models/"
"""Where a logged model's files live among its source run's artifacts: ``/models/<model id>/<path>`` (a path
no client can upload to the run itself, since run artifact paths are relative)."""
RUN_STATUS = {
    RunStatus.REQUESTED: "SCHEDULED",
    RunStatus.CLAIMED: "SCHEDULED",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.SUCCEEDED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.ABANDONED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
}
END_STATUS = {"FINISHED": "succeeded", "FAILED": "failed", "KILLED": "cancelled"}
ERROR_CODES: list[tuple[type[LedgerError], str]] = [
    (Unauthenticated, "UNAUTHENTICATED"),
    (Forbidden, "PERMISSION_DENIED"),
    (NotFound, "RESOURCE_DOES_NOT_EXIST"),
    (AlreadyExists, "RESOURCE_ALREADY_EXISTS"),
    (PayloadTooLarge, "INVALID_PARAMETER_VALUE"),
    (InvalidPayload, "INVALID_PARAMETER_VALUE"),
    (ApprovalRequired, "INVALID_STATE"),
    (VersionConflict, "ABORTED"),
    (RuleViolated, "INVALID_STATE"),
]


def error_body(error: LedgerError) -> tuple[int, dict[str, str]]:
    """The HTTP status and MLflow error body (``error_code``, ``message``) of a ledger error."""
    code = next((name for kind, name in ERROR_CODES if isinstance(error, kind)), "BAD_REQUEST")
    message = error.detail if error.field is None else f"{error.detail} (field {error.field})"
    return http_status(error), {"error_code": code, "message": message}


def millis(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch."""
    return None if moment is None else int(moment.timestamp() * 1000)


def artifact_name(path: str) -> str:
    """The ledger artifact name of an MLflow artifact path (``/`` and ``%`` escaped: names hold no ``/``)."""
    return quote(path, safe="")


def artifact_path(name: str) -> str:
    """The MLflow artifact path of a ledger artifact name."""
    return unquote(name)


def logged_model_path(model_id: str, path: str = "") -> str:
    """The run artifact path of a file of a logged model (``path`` relative to the model's root)."""
    return f"{LOGGED_MODELS_DIR}{model_id}/{path}"


def logged_model_of(path: str) -> str | None:
    """The model id when a run artifact path is a logged model's file, else None."""
    if not path.startswith(LOGGED_MODELS_DIR):
        return None
    return path.removeprefix(LOGGED_MODELS_DIR).partition("/")[0]


def check_artifact_path(path: str) -> str:
    """A relative path with no empty, ``.`` or ``..`` parts."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise InvalidPayload(f"invalid artifact path {path!r}", field="path")
    return path


def experiment_json(experiment: Experiment, public_id: str) -> dict[str, Any]:
    """An MLflow Experiment."""
    return {
        "experiment_id": public_id,
        "name": experiment.name,
        "artifact_location": f"mlflow-artifacts:/{public_id}",
        "lifecycle_stage": "deleted" if experiment.deleted else "active",
        "creation_time": millis(experiment.created_on),
        "last_update_time": millis(experiment.modified_on),
        "tags": [{"key": k, "value": v} for k, v in sorted(experiment.tags.items())],
    }


def experiment_record(experiment: Experiment, public_id: str) -> Searchable:
    """What an experiment search filters and sorts on."""
    return Searchable(
        tags=dict(experiment.tags),
        attributes={
            "name": experiment.name,
            "experiment_id": public_id,
            "creation_time": millis(experiment.created_on),
            "last_update_time": millis(experiment.modified_on),
        },
        subject=(experiment, public_id),
    )


def param_text(value: Any) -> str:
    """A recorded parameter as MLflow's string (JSON for what a native client recorded as non-strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def run_experiment_id(run: Run, default_uuid: str) -> str:
    """The MLflow experiment id of a run (native runs, filed nowhere, read as the default experiment's)."""
    if run.experiment_id is None or run.experiment_id == default_uuid:
        return "0"
    return run.experiment_id


def run_json(run: Run, experiment_id: str) -> dict[str, Any]:
    """An MLflow Run: info, data (latest metrics, params, tags) and no inputs."""
    run_id = str(run.id)
    created = run.created_on
    metrics = [
        {
            "key": key,
            "value": point["value"],
            "step": point["step"],
            "timestamp": _point_time(point, created),
        }
        for key, point in sorted(run.latest_metrics.items())
    ]
    return {
        "info": {
            "run_id": run_id,
            "run_uuid": run_id,
            "run_name": run.tags.get("mlflow.runName", run.name),
            "experiment_id": experiment_id,
            "user_id": run.tags.get("mlflow.user", run.submitted_by),
            "status": RUN_STATUS[run.status],
            "start_time": millis(created),
            "end_time": millis(run.modified_on) if run.finished else None,
            "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
            "lifecycle_stage": "deleted" if run.deleted else "active",
        },
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": param_text(v)} for k, v in sorted(run.params.items())],
            "tags": [{"key": k, "value": v} for k, v in sorted(run.tags.items())],
        },
        "inputs": {
            "dataset_inputs": [
                {
                    "dataset": {k: v for k, v in d.items() if k != "tags"},
                    "tags": [{"key": k, "value": v} for k, v in sorted(d.get("tags", {}).items())],
                }
                for d in run.dataset_inputs
            ],
            "model_inputs": [{"model_id": m} for m in run.model_inputs],
        },
        "outputs": {"model_outputs": [dict(m) for m in run.model_outputs]},
    }


def _point_time(point: dict[str, Any], created: datetime | None) -> int:
    stamp = point.get("timestamp")
    if isinstance(stamp, str) and stamp.lstrip("-").isdigit():
        return int(stamp)
    return millis(created) or 0


def metric_json(point: dict[str, Any], run: Run) -> dict[str, Any]:
    """An MLflow Metric from a recorded point."""
    return {
        "key": point["key"],
        "value": point["value"],
        "step": point["step"],
        "timestamp": _point_time(point, run.created_on),
    }


def run_record(run: Run, experiment_id: str) -> Searchable:
    """What a run search filters and sorts on."""
    shown = run_json(run, experiment_id)["info"]
    return Searchable(
        metrics={k: p["value"] for k, p in run.latest_metrics.items()},
        params={k: param_text(v) for k, v in run.params.items()},
        tags=dict(run.tags),
        attributes={
            "run_id": shown["run_id"],
            "run_name": shown["run_name"],
            "status": shown["status"],
            "user_id": shown["user_id"],
            "artifact_uri": shown["artifact_uri"],
            "start_time": shown["start_time"],
            "end_time": shown["end_time"],
            "lifecycle_stage": shown["lifecycle_stage"],
        },
        subject=(run, experiment_id),
    )


def version_model_id(version: ModelVersion) -> str | None:
    """The logged model a version was registered from, or None."""
    return logged_model_of(artifact_path(version.artifact_name))


def version_download_uri(version: ModelVersion, experiment_id: str) -> str:
    """Where a version's files are through the proxied artifact API."""
    model_id = version_model_id(version)
    if model_id is not None:
        return f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts"
    return version_source(version, experiment_id)


def version_source(version: ModelVersion, experiment_id: str) -> str:
    """The MLflow source of a version: ``models:/<id>`` for a logged model, else the run's artifact directory
    holding its MLmodel (or the file)."""
    path = artifact_path(version.artifact_name)
    model_id = logged_model_of(path)
    if model_id is not None:
        return f"models:/{model_id}"
    directory, _, leaf = path.rpartition("/")
    if leaf == MLMODEL:
        path = directory
    return f"mlflow-artifacts:/{experiment_id}/{version.run_id}/artifacts/{path}".rstrip("/")


def champion_of(deployment: Deployment | None) -> int | None:
    """The champion's version number, or None."""
    if deployment is None or deployment.champion is None:
        return None
    return deployment.champion.number


def version_json(
    version: ModelVersion,
    labels: ModelLabels | None,
    champion: int | None,
    experiment_id: str,
) -> dict[str, Any]:
    """An MLflow ModelVersion; its stage is ``Production`` exactly when it is the deployed champion."""
    number = version.number
    stage = PRODUCTION_STAGE if champion == number else (labels.stages.get(number, "None") if labels else "None")
    aliases = sorted(a for a, n in (labels.aliases.items() if labels else []) if n == number)
    if champion == number:
        aliases = sorted([*aliases, CHAMPION_ALIAS])
    tags = labels.tags.get(number, {}) if labels else {}
    updated = max(version.modified_on, labels.modified_on) if labels else version.modified_on
    return {
        "name": version.model_name,
        "version": str(number),
        "creation_timestamp": millis(version.created_on),
        "last_updated_timestamp": millis(updated),
        "user_id": version.registered_by,
        "current_stage": stage,
        "description": labels.descriptions.get(number, "") if labels else "",
        "source": version_source(version, experiment_id),
        "run_id": version.run_id,
        "status": "READY",
        "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
        "aliases": aliases,
        **({"model_id": model_id} if (model_id := version_model_id(version)) else {}),
    }


def model_json(
    model: Model,
    labels: ModelLabels | None,
    champion: int | None,
    latest: list[dict[str, Any]],
) -> dict[str, Any]:
    """An MLflow RegisteredModel with the latest version of each stage."""
    aliases = dict(labels.aliases) if labels else {}
    if champion is not None:
        aliases[CHAMPION_ALIAS] = champion
    updated = max(model.modified_on, labels.modified_on) if labels else model.modified_on
    return {
        "name": model.name,
        "creation_timestamp": millis(model.created_on),
        "last_updated_timestamp": millis(updated),
        "description": labels.descriptions.get(None, "") if labels else "",
        "latest_versions": latest,
        "tags": [{"key": k, "value": v} for k, v in sorted((labels.tags.get(None, {}) if labels else {}).items())],
        "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(aliases.items())],
    }


LOGGED_MODEL_STATUS = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY"}
LOGGED_MODEL_STATUS["UPLOAD_FAILED"] = "LOGGED_MODEL_UPLOAD_FAILED"


def logged_model_json(model: LoggedModel, experiment_id: str, registrations: list[dict[str, str]]) -> dict[str, Any]:
    """An MLflow LoggedModel (info and data; its metrics are its source run's)."""
    model_id = public_id(model.id)
    return {
        "info": {
            "model_id": model_id,
            "experiment_id": experiment_id,
            "name": model.name,
            "creation_timestamp_ms": millis(model.created_on),
            "last_updated_timestamp_ms": millis(model.modified_on),
            "artifact_uri": f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts",
            "status": LOGGED_MODEL_STATUS[model.status],
            "model_type": model.model_type,
            "source_run_id": model.source_run_id,
            "tags": [{"key": k, "value": v} for k, v in sorted(model.tags.items())],
            "registrations": registrations,
        },
        "data": {"params": [{"key": k, "value": v} for k, v in sorted(model.params.items())], "metrics": []},
    }


def logged_model_record(model: LoggedModel, experiment_id: str) -> Searchable:
    """What a logged-model search filters and sorts on."""
    return Searchable(
        params=dict(model.params),
        tags=dict(model.tags),
        attributes={
            "model_id": public_id(model.id),
            "name": model.name,
            "model_type": model.model_type,
            "status": LOGGED_MODEL_STATUS[model.status],
            "source_run_id": model.source_run_id,
            "creation_timestamp": millis(model.created_on),
            "creation_time": millis(model.created_on),
            "last_updated_timestamp": millis(model.modified_on),
        },
        subject=(model, experiment_id),
    )
