"""Pipeline: a named training recipe of a kind (sklearn, torch, python) with
versioned specs. A spec says everything a runner needs; nothing is implicit."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload, PipelineKindMismatch, SpecUnchanged, UnknownSpecVersion
from domain.integrity.canonical import canonical_json
from domain.statistics.series import check_name, series_id

KINDS = ("sklearn", "torch", "python")
TASKS = ("classification", "regression")
PARAM_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
OPTIMIZERS = ("adam", "sgd", "adamw")


def spec_digest(spec: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the spec's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(spec, path="spec")).hexdigest()


def _require(spec: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = spec.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidPayload(f"spec.{key} must be {what}", field=f"spec.{key}")
    return value


def _check_features(spec: dict[str, Any]) -> None:
    features = _require(spec, "features", list, "a non-empty list of column names")
    if not features or not all(isinstance(f, str) and f for f in features):
        raise InvalidPayload("spec.features must be a non-empty list of column names", field="spec.features")
    target = _require(spec, "target", str, "the target column name")
    if target in features:
        raise InvalidPayload("spec.target may not also be a feature", field="spec.target")
    if spec.get("task") not in TASKS:
        raise InvalidPayload(f"spec.task must be one of {', '.join(TASKS)}", field="spec.task")


def _check_params_schema(spec: dict[str, Any]) -> None:
    schema = spec.get("params_schema", {})
    if not isinstance(schema, dict):
        raise InvalidPayload(
            "spec.params_schema must map parameter names to {type, default}", field="spec.params_schema"
        )
    for name, rule in schema.items():
        field = f"spec.params_schema.{name}"
        if not isinstance(rule, dict) or rule.get("type") not in PARAM_TYPES:
            raise InvalidPayload(f"{field}.type must be one of {', '.join(PARAM_TYPES)}", field=f"{field}.type")
        if "default" in rule:
            check_param(name, rule["default"], rule, field=f"{field}.default")


def check_param(name: str, value: Any, rule: dict[str, Any], field: str | None = None) -> None:
    """Refuse a parameter value of the wrong type for its declared rule."""
    expected = PARAM_TYPES[rule["type"]]
    if (isinstance(value, bool) and rule["type"] != "bool") or not isinstance(value, expected):
        raise InvalidPayload(
            f"parameter {name!r} must be of type {rule['type']}, got {type(value).__name__}",
            field=field or f"params.{name}",
        )


def check_spec(kind: str, spec: dict[str, Any]) -> None:
    """Validate a pipeline spec of ``kind``; raise :class:`InvalidPayload` naming the field."""
    if kind not in KINDS:
        raise InvalidPayload(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if not isinstance(spec, dict):
        raise InvalidPayload("spec must be an object", field="spec")
    canonical_json(spec, path="spec")
    _check_params_schema(spec)
    if kind == "sklearn":
        _check_features(spec)
        estimator = _require(spec, "estimator", str, "an import path such as sklearn.ensemble.RandomForestClassifier")
        if not estimator.startswith("sklearn.") or not IMPORT_PATH.fullmatch(estimator):
            raise InvalidPayload(
                "spec.estimator must be a class path inside the sklearn. namespace", field="spec.estimator"
            )
        if not isinstance(spec.get("estimator_params", {}), dict):
            raise InvalidPayload("spec.estimator_params must be an object", field="spec.estimator_params")
    elif kind == "torch":
        _check_features(spec)
        hidden = spec.get("hidden_layers", [64, 32])
        if not isinstance(hidden, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and 0 < h <= 4096 for h in hidden
        ):
            raise InvalidPayload(
                "spec.hidden_layers must be a list of layer widths (1..4096)", field="spec.hidden_layers"
            )
        if spec.get("optimizer", "adam") not in OPTIMIZERS:
            raise InvalidPayload(f"spec.optimizer must be one of {', '.join(OPTIMIZERS)}", field="spec.optimizer")
    else:
        entrypoint = _require(spec, "entrypoint", str, "module:function")
        if not ENTRYPOINT.fullmatch(entrypoint):
            raise InvalidPayload("spec.entrypoint must look like package.module:function", field="spec.entrypoint")
        limit = spec.get("time_limit_seconds", 3600)
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit <= 7 * 86400:
            raise InvalidPayload(
                "spec.time_limit_seconds must be between 0 and 604800", field="spec.time_limit_seconds"
            )
        if not isinstance(spec.get("network", False), bool):
            raise InvalidPayload("spec.network must be true or false (default false: no network)", field="spec.network")


class Pipeline(LedgerAggregate):
    """A named pipeline and its versioned specs."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """A pipeline was created."""

        TOPIC = "mlledger.pipeline.Created.v1"
        name: str
        kind: str

    class SpecVersioned(LedgerAggregate.Event):
        """Spec version ``number`` was recorded."""

        TOPIC = "mlledger.pipeline.SpecVersioned.v1"
        number: int
        spec: dict[str, Any]
        spec_digest: str

    @staticmethod
    def create_id(name: str, **_: object) -> uuid.UUID:
        """One aggregate per pipeline name."""
        return series_id("pipeline", name)

    @event(Created)
    def __init__(self, name: str, kind: str, actor: str) -> None:
        self.name = name
        self.kind = kind
        self.specs: list[dict[str, Any]] = []
        self.digests: list[str] = []

    @staticmethod
    def check_creation(name: str, kind: str) -> None:
        """Validate the name and kind."""
        check_name(name)
        if kind not in KINDS:
            raise InvalidPayload(f"kind must be one of {', '.join(KINDS)}", field="kind")

    def check_kind(self, kind: str) -> None:
        """A pipeline keeps the kind it was created with."""
        if kind != self.kind:
            raise PipelineKindMismatch(f"pipeline {self.name} is of kind {self.kind}, not {kind}", field="kind")

    def add_spec(self, spec: dict[str, Any], actor: str) -> int:
        """Validate and record a new spec version; refuse an unchanged spec."""
        check_spec(self.kind, spec)
        digest = spec_digest(spec)
        if self.digests and self.digests[-1] == digest:
            raise SpecUnchanged("the spec is identical to the latest version", field="spec")
        self._add_spec(number=len(self.specs) + 1, spec=spec, spec_digest=digest, actor=actor)
        return len(self.specs)

    @event(SpecVersioned)
    def _add_spec(self, number: int, spec: dict[str, Any], spec_digest: str, actor: str) -> None:
        self.specs.append(spec)
        self.digests.append(spec_digest)

    def spec(self, number: int) -> dict[str, Any]:
        """Spec version ``number`` (1-based)."""
        if not 1 <= number <= len(self.specs):
            raise UnknownSpecVersion(f"pipeline {self.name} has no spec version {number}", field="pipeline_version")
        return self.specs[number - 1]

    def spec_number(self, requested: int | None) -> int:
        """The spec version a run uses: the one asked for (it must exist), else the latest."""
        number = requested or len(self.specs)
        self.spec(number)
        return number

    def run_params(self, number: int, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters a run of spec ``number`` uses: the declared defaults, overridden
        by ``params``, each declared one checked against its declared type."""
        schema = self.spec(number).get("params_schema", {})
        for key, value in params.items():
            if key in schema:
                check_param(key, value, schema[key])
        return {k: r["default"] for k, r in schema.items() if "default" in r} | params
