"""Reads of the registry, one small function per question, each returning DTOs
(pydantic models) with JSON columns already parsed. ``None`` means not found."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from domain.errors import InvalidPayload
from projections import registry as r

Dto = TypeVar("Dto", bound=BaseModel)


def _dto(cls: type[Dto], row: sa.Row[Any] | None, *json_fields: str, **extra: Any) -> Dto | None:
    if row is None:
        return None
    data = dict(row._mapping)
    for name in json_fields:
        data[name] = None if data[name] is None else json.loads(data[name])
    return cls.model_validate(data | extra)


def _all(cls: type[Dto], rows: Any, *json_fields: str) -> list[Dto]:
    return [dto for row in rows if (dto := _dto(cls, row, *json_fields)) is not None]


def after_key(query: Any, columns: Sequence[Any], after: Sequence[Any] | None, *, descending: bool = False) -> Any:
    """``query`` restricted to rows strictly past ``after`` in the order of ``columns`` (keyset paging)."""
    if after is None:
        return query
    if len(after) != len(columns):
        raise InvalidPayload("the cursor does not belong to this list", field="cursor")
    left, right = sa.tuple_(*columns), sa.tuple_(*(sa.literal(value) for value in after))
    return query.where(left < right if descending else left > right)


def check_limit(limit: int, most: int = 1000) -> int:
    """Refuse a page size outside 1..``most``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidPayload(f"limit must be between 1 and {most}", field="limit")
    return limit


class SigningKeyPublic(BaseModel):
    """A principal's registered public signing key."""

    key_id: str
    public_key_pem: str
    registered_at: str


class PrincipalPublic(BaseModel):
    """A user or service account with its roles and signing keys."""

    id: str
    name: str
    kind: str
    roles: list[str]
    active: bool
    registered_at: str
    signing_keys: list[SigningKeyPublic] = []


def _with_keys(conn: Connection, rows: list[sa.Row[Any]]) -> list[PrincipalPublic]:
    keys: dict[str, list[SigningKeyPublic]] = {row.id: [] for row in rows}
    if keys:
        t = r.reg_signing_keys
        query = sa.select(t).where(t.c.principal_id.in_(list(keys))).order_by(t.c.registered_at, t.c.key_id)
        for key in conn.execute(query):
            keys[key.principal_id].append(SigningKeyPublic.model_validate(dict(key._mapping)))
    return [
        PrincipalPublic.model_validate(
            dict(row._mapping) | {"roles": json.loads(row.roles), "signing_keys": keys[row.id]}
        )
        for row in rows
    ]


def principal(conn: Connection, principal_id: str) -> PrincipalPublic | None:
    """The principal with ``principal_id``."""
    rows = conn.execute(sa.select(r.reg_principals).where(r.reg_principals.c.id == principal_id)).all()
    found = _with_keys(conn, list(rows))
    return found[0] if found else None


def list_principals(
    conn: Connection, *, limit: int = 1000, after: Sequence[Any] | None = None
) -> list[PrincipalPublic]:
    """Principals by name (then id), after the key (name, id) ``after``."""
    t = r.reg_principals
    query = after_key(sa.select(t).order_by(t.c.name, t.c.id), (t.c.name, t.c.id), after)
    return _with_keys(conn, list(conn.execute(query.limit(check_limit(limit, 1001))).all()))


class DatasetVersionPublic(BaseModel):
    """A registered dataset version and its datasheet."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    id: str
    name: str
    number: int
    digest: str
    size: int
    format: str
    schema_: list[dict[str, Any]] = Field(alias="schema")
    row_count: int
    profile: list[dict[str, Any]]
    """Per-column statistics of the data (the reference for drift)."""
    datasheet: dict[str, Any]
    source: str
    registered_by: str
    registered_at: str
    deprecated: bool
    tags: dict[str, str] = {}
    description: str = ""


def _dataset(row: sa.Row[Any] | None) -> DatasetVersionPublic | None:
    return _dto(DatasetVersionPublic, row, "schema", "profile", "datasheet", "tags")


def dataset_versions(
    conn: Connection, name: str, *, limit: int | None = None, after: Sequence[Any] | None = None
) -> list[DatasetVersionPublic]:
    """The versions of the named dataset, oldest first (after version number ``after``, at most ``limit``)."""
    t = r.reg_dataset_versions
    query = after_key(sa.select(t).where(t.c.name == name).order_by(t.c.number), (t.c.number,), after)
    rows = conn.execute(query if limit is None else query.limit(limit))
    return [d for row in rows if (d := _dataset(row)) is not None]


def dataset_version(conn: Connection, dataset_version_id: str) -> DatasetVersionPublic | None:
    """The dataset version with ``dataset_version_id``."""
    t = r.reg_dataset_versions
    return _dataset(conn.execute(sa.select(t).where(t.c.id == dataset_version_id)).first())


def dataset_versions_by_id(conn: Connection, ids: list[str]) -> list[DatasetVersionPublic]:
    """The dataset versions with the given ids, in the order given (unknown ids are left out)."""
    t = r.reg_dataset_versions
    found = {row.id: row for row in conn.execute(sa.select(t).where(t.c.id.in_(ids)))} if ids else {}
    return [d for i in ids if (d := _dataset(found.get(i))) is not None]


class CodeVersionPublic(BaseModel):
    """A registered code version."""

    id: str
    repository: str
    commit: str
    archive_digest: str | None
    entrypoint: str | None
    registered_by: str
    registered_at: str


def code_version(conn: Connection, code_version_id: str) -> CodeVersionPublic | None:
    """The code version with ``code_version_id``."""
    t = r.reg_code_versions
    return _dto(CodeVersionPublic, conn.execute(sa.select(t).where(t.c.id == code_version_id)).first())


class PipelineSpecPublic(BaseModel):
    """One spec version of a pipeline."""

    name: str
    number: int
    kind: str
    spec: dict[str, Any]
    spec_digest: str
    created_by: str
    created_at: str


def pipeline(conn: Connection, name: str, number: int | None = None) -> PipelineSpecPublic | None:
    """Spec version ``number`` of the named pipeline, or its latest one."""
    t = r.reg_pipelines
    query = sa.select(t).where(t.c.name == name)
    query = query.where(t.c.number == number) if number is not None else query.order_by(t.c.number.desc())
    return _dto(PipelineSpecPublic, conn.execute(query.limit(1)).first(), "spec")


class RunPublic(BaseModel):
    """A run: what it was asked to do and how it went."""

    id: str
    name: str
    mode: str
    pipeline_id: str | None
    pipeline_name: str | None
    pipeline_version: int | None
    spec_digest: str | None
    dataset_version_ids: list[str]
    code_version_id: str | None
    params: dict[str, Any]
    seed: int
    device: str
    status: str
    error: str | None
    submitted_by: str
    requested_at: str
    finished_at: str | None
    metric_points: int
    resources: dict[str, Any] | None = None
    """What the execution used (``domain.usage``), once recorded."""
    tags: dict[str, str] = {}
    description: str = ""


RUN_JSON = ("dataset_version_ids", "params", "resources", "tags")


def run(conn: Connection, run_id: str) -> RunPublic | None:
    """The run with ``run_id``."""
    row = conn.execute(sa.select(r.reg_runs).where(r.reg_runs.c.id == run_id)).first()
    return _dto(RunPublic, row, *RUN_JSON)


def runs_by_id(conn: Connection, ids: list[str]) -> list[RunPublic]:
    """The runs with the given ids, in the order given (unknown ids are left out)."""
    t = r.reg_runs
    found = {row.id: row for row in conn.execute(sa.select(t).where(t.c.id.in_(ids)))} if ids else {}
    return [d for i in ids if (d := _dto(RunPublic, found.get(i), *RUN_JSON)) is not None]


def list_runs(
    conn: Connection, *, status: str | None = None, limit: int = 100, after: Sequence[Any] | None = None
) -> list[RunPublic]:
    """Runs, newest first (by request time, then id, both descending), optionally only those with
    ``status``; ``after`` is the (requested_at, id) of the last run of the previous page."""
    t = r.reg_runs
    query = sa.select(t).order_by(t.c.requested_at.desc(), t.c.id.desc()).limit(check_limit(limit, 1001))
    query = after_key(query, (t.c.requested_at, t.c.id), after, descending=True)
    if status is not None:
        query = query.where(t.c.status == status)
    return _all(RunPublic, conn.execute(query), *RUN_JSON)


class MetricPoint(BaseModel):
    """One recorded value of a metric."""

    key: str
    step: int
    value: float
    timestamp: str
    position: int = Field(0, description="the ledger position of the event that recorded it")
    seq: int = Field(0, description="its place among the points that event recorded")


def run_metrics(
    conn: Connection, run_id: str, key: str, *, limit: int | None = None, after: Sequence[Any] | None = None
) -> list[MetricPoint]:
    """The points of metric ``key`` of a run, by step then recording order; ``after`` is the
    (step, position, seq) of the last point of the previous page."""
    t = r.reg_run_metrics
    query = (
        sa.select(t.c.key, t.c.step, t.c.value, t.c.timestamp, t.c.notification_id.label("position"), t.c.seq)
        .where(t.c.run_id == run_id, t.c.key == key)
        .order_by(t.c.step, t.c.notification_id, t.c.seq)
    )
    query = after_key(query, (t.c.step, t.c.notification_id, t.c.seq), after)
    return _all(MetricPoint, conn.execute(query if limit is None else query.limit(limit)))


def final_metrics_of(conn: Connection, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Each run's metrics at their highest step (the last value recorded at that step), for many runs."""
    if not run_ids:
        return {}
    t = r.reg_run_metrics
    last = (
        sa.select(t.c.run_id, t.c.key, sa.func.max(t.c.step).label("step"))
        .where(t.c.run_id.in_(run_ids))
        .group_by(t.c.run_id, t.c.key)
        .subquery()
    )
    query = (
        sa.select(t.c.run_id, t.c.key, t.c.value)
        .join(last, sa.and_(t.c.run_id == last.c.run_id, t.c.key == last.c.key, t.c.step == last.c.step))
        .order_by(t.c.notification_id, t.c.seq)
    )
    found: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    for row in conn.execute(query):
        found[row.run_id][row.key] = row.value
    return found


def final_metrics(conn: Connection, run_id: str) -> dict[str, MetricPoint]:
    """Each metric's value at its highest step (the last one recorded at that step)."""
    t = r.reg_run_metrics
    last = (
        sa.select(t.c.key, sa.func.max(t.c.step).label("step")).where(t.c.run_id == run_id).group_by(t.c.key).subquery()
    )
    query = (
        sa.select(t.c.key, t.c.step, t.c.value, t.c.timestamp)
        .join(last, sa.and_(t.c.key == last.c.key, t.c.step == last.c.step))
        .where(t.c.run_id == run_id)
        .order_by(t.c.key, t.c.notification_id, t.c.seq)
    )
    return {point.key: point for point in _all(MetricPoint, conn.execute(query))}


class ArtifactPublic(BaseModel):
    """A content-addressed artifact a run produced."""

    name: str
    digest: str
    size: int
    media_type: str


def run_artifacts(conn: Connection, run_id: str) -> list[ArtifactPublic]:
    """A run's artifacts by name."""
    t = r.reg_run_artifacts
    query = sa.select(t.c.name, t.c.digest, t.c.size, t.c.media_type).where(t.c.run_id == run_id)
    return _all(ArtifactPublic, conn.execute(query.order_by(t.c.name)))


class ModelPublic(BaseModel):
    """A named model and its approval policy."""

    name: str
    id: str
    policy: dict[str, Any]
    created_at: str


def list_models(conn: Connection, *, limit: int | None = None, after: Sequence[Any] | None = None) -> list[ModelPublic]:
    """Models by name (after the name ``after``, at most ``limit``)."""
    t = r.reg_models
    query = after_key(sa.select(t).order_by(t.c.name), (t.c.name,), after)
    return _all(ModelPublic, conn.execute(query if limit is None else query.limit(limit)), "policy")


def model(conn: Connection, name: str) -> ModelPublic | None:
    """The named model."""
    row = conn.execute(sa.select(r.reg_models).where(r.reg_models.c.name == name)).first()
    return _dto(ModelPublic, row, "policy")


class ModelVersionPublic(BaseModel):
    """A model version, where it came from, and its approval state under the model's policy."""

    id: str
    model_name: str
    number: int
    run_id: str
    run_digest: str
    artifact_name: str
    artifact_digest: str
    input_schema: list[dict[str, Any]]
    registered_by: str
    registered_at: str
    state: str
    approvals: int
    rejections: int
    tags: dict[str, str] = {}
    description: str = ""


def model_versions(
    conn: Connection, name: str, *, limit: int | None = None, after: Sequence[Any] | None = None
) -> list[ModelVersionPublic]:
    """The versions of the named model, oldest first (after version number ``after``, at most ``limit``)."""
    t = r.reg_model_versions
    query = after_key(sa.select(t).where(t.c.model_name == name).order_by(t.c.number), (t.c.number,), after)
    return _all(
        ModelVersionPublic, conn.execute(query if limit is None else query.limit(limit)), "input_schema", "tags"
    )


def model_version(conn: Connection, name: str, number: int) -> ModelVersionPublic | None:
    """Version ``number`` of the named model."""
    t = r.reg_model_versions
    row = conn.execute(sa.select(t).where(t.c.model_name == name, t.c.number == number)).first()
    return _dto(ModelVersionPublic, row, "input_schema", "tags")


class ApprovalPublic(BaseModel):
    """A signed approval or rejection, verifiable with the approver's key."""

    notification_id: int
    model_version_id: str
    approver: str
    key_id: str
    decision: str
    statement: dict[str, Any]
    signature: str
    recorded_at: str


def approvals(conn: Connection, model_version_id: str) -> list[ApprovalPublic]:
    """Decisions on a model version, in the order they were recorded."""
    t = r.reg_approvals
    query = sa.select(t).where(t.c.model_version_id == model_version_id).order_by(t.c.notification_id)
    return _all(ApprovalPublic, conn.execute(query), "statement")


class DeploymentPublic(BaseModel):
    """What serves a model now."""

    model_name: str
    champion_version_id: str | None
    champion_number: int | None
    challenger_version_id: str | None
    challenger_number: int | None
    canary_version_id: str | None
    canary_number: int | None
    canary_share: float | None
    stopped: bool
    retired: bool
    updated_at: str


def deployment(conn: Connection, model_name: str) -> DeploymentPublic | None:
    """The deployment of the named model."""
    t = r.reg_deployments
    return _dto(DeploymentPublic, conn.execute(sa.select(t).where(t.c.model_name == model_name)).first())


def serving_versions(conn: Connection) -> list[str]:
    """The model versions live deployments serve: champions, then canaries, then challengers (newest first)."""
    t = r.reg_deployments
    live = conn.execute(
        sa.select(t.c.champion_version_id, t.c.canary_version_id, t.c.challenger_version_id)
        .where(~t.c.stopped, ~t.c.retired)
        .order_by(t.c.updated_at.desc(), t.c.model_name)
    ).all()
    ordered = [row[role] for role in range(3) for row in live if row[role] is not None]
    return list(dict.fromkeys(ordered))


class DeploymentChange(BaseModel):
    """One change of a deployment."""

    notification_id: int
    model_name: str
    action: str
    model_version_id: str | None
    number: int | None
    share: float | None
    reason: str | None
    actor: str
    recorded_at: str


def deployment_history(conn: Connection, model_name: str) -> list[DeploymentChange]:
    """Every change of the named model's deployment, oldest first."""
    t = r.reg_deployment_history
    query = sa.select(t).where(t.c.model_name == model_name).order_by(t.c.recorded_at, t.c.notification_id)
    return _all(DeploymentChange, conn.execute(query))
