"""The registry: the current state of everything the ledger governs, one table per
kind of thing (principals, keys, datasets, code, pipelines, runs and their metrics
and artifacts, models, versions, approvals, deployments and their history).

The tables are a pure function of the log: handlers read only the event and rows
written by earlier events, and stamp rows with the event's own time. A version's
approval state is computed here from its model's policy, exactly as
``ModelVersion.state`` computes it, and recomputed for every version of a model
whenever the model's policy is set, because a policy change applies to later
decisions and to deployability from then on.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.approval import ApprovalPolicy
from domain.code import CodeVersion
from domain.credentials import ApiKey
from domain.dataset import DatasetVersion
from domain.deployment import Deployment
from domain.model import Model, ModelVersion, approval_state
from domain.model_labels import ModelLabels
from domain.pipeline import Pipeline
from domain.principal import Principal
from domain.run import Run, RunStatus
from projections.base import ProjectedEvent, Projection, handler_registry, insert_rows
from projections.tables import json_text, metadata

ID, NAME, TIME, DIGEST = sa.String(64), sa.String(200), sa.String(32), sa.String(80)


def _text(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Text, nullable=nullable)


def _annotations() -> list[sa.Column[Any]]:
    """The tags (a JSON object) and description of an annotated record."""
    return [
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
    ]


reg_principals = sa.Table(
    "reg_principals",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    _text("roles"),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("registered_at", TIME, nullable=False),
    sa.UniqueConstraint("name", name="uq_reg_principals_name"),
)
reg_api_keys = sa.Table(
    "reg_api_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("principal_id", ID, nullable=False, index=True),
    _text("label"),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Column("issued_at", TIME, nullable=False),
)
reg_signing_keys = sa.Table(
    "reg_signing_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("principal_id", ID, primary_key=True),
    _text("public_key_pem"),
    sa.Column("registered_at", TIME, nullable=False),
)
reg_dataset_versions = sa.Table(
    "reg_dataset_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("digest", DIGEST, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    _text("format"),
    _text("schema"),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    _text("profile"),
    _text("datasheet"),
    _text("source"),
    _text("registered_by"),
    sa.Column("registered_at", TIME, nullable=False),
    sa.Column("deprecated", sa.Boolean, nullable=False),
    *_annotations(),
    sa.UniqueConstraint("name", "number", name="uq_reg_dataset_versions_name_number"),
)
reg_code_versions = sa.Table(
    "reg_code_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("repository", sa.String(500), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("archive_digest", DIGEST, nullable=True),
    _text("entrypoint", nullable=True),
    _text("registered_by"),
    sa.Column("registered_at", TIME, nullable=False),
)
# A pipeline's later events carry only its id; this maps the id to name and kind.
reg_pipeline_names = sa.Table(
    "reg_pipeline_names",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.UniqueConstraint("name", name="uq_reg_pipeline_names_name"),
)
reg_pipelines = sa.Table(
    "reg_pipelines",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(20), nullable=False),
    _text("spec"),
    sa.Column("spec_digest", DIGEST, nullable=False),
    _text("created_by"),
    sa.Column("created_at", TIME, nullable=False),
)
reg_runs = sa.Table(
    "reg_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("pipeline_id", ID, nullable=True),
    sa.Column("pipeline_name", NAME, nullable=True),
    sa.Column("pipeline_version", sa.BigInteger, nullable=True),
    sa.Column("spec_digest", DIGEST, nullable=True),
    _text("dataset_version_ids"),
    sa.Column("code_version_id", ID, nullable=True),
    _text("params"),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("device", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    _text("error", nullable=True),
    _text("submitted_by"),
    sa.Column("requested_at", TIME, nullable=False),
    sa.Column("finished_at", TIME, nullable=True),
    sa.Column("metric_points", sa.BigInteger, nullable=False),
    sa.Column("runner_id", sa.String(200), nullable=True),
    sa.Column("environment_digest", DIGEST, nullable=True),
    sa.Column("reproduces", ID, nullable=True),
    _text("resources", nullable=True),
    *_annotations(),
    sa.Index("ix_reg_runs_status_requested_at", "status", "requested_at"),
    sa.Index("ix_reg_runs_finished_at", "finished_at"),
)
reg_reproductions = sa.Table(
    "reg_reproductions",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("reproduction_run_id", ID, nullable=False),
    sa.Column("verdict", sa.String(20), nullable=False),
    sa.Column("method", sa.String(40), nullable=True),
    sa.Column("tolerance", sa.Float, nullable=True),
    _text("details"),
    sa.Column("recorded_at", TIME, nullable=False),
    sa.Index("ix_reg_reproductions_run", "run_id"),
)
reg_run_metrics = sa.Table(
    "reg_run_metrics",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Double, nullable=False),
    _text("timestamp"),
    sa.Index("ix_reg_run_metrics_run_key_step", "run_id", "key", "step"),
)
reg_run_artifacts = sa.Table(
    "reg_run_artifacts",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("digest", DIGEST, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    _text("media_type"),
)
reg_models = sa.Table(
    "reg_models",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("id", ID, nullable=False),
    _text("policy"),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("id", name="uq_reg_models_id"),
)
reg_model_labels = sa.Table(
    "reg_model_labels",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("model_name", NAME, nullable=False),
)
reg_model_versions = sa.Table(
    "reg_model_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("model_name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("run_digest", DIGEST, nullable=False),
    sa.Column("artifact_name", NAME, nullable=False),
    sa.Column("artifact_digest", DIGEST, nullable=False),
    _text("input_schema"),
    _text("registered_by"),
    sa.Column("registered_at", TIME, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("approvals", sa.Integer, nullable=False),
    sa.Column("rejections", sa.Integer, nullable=False),
    *_annotations(),
    sa.UniqueConstraint("model_name", "number", name="uq_reg_model_versions_model_number"),
)
reg_approvals = sa.Table(
    "reg_approvals",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_version_id", ID, nullable=False),
    _text("approver"),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(20), nullable=False),
    _text("statement"),
    _text("signature"),
    sa.Column("recorded_at", TIME, nullable=False),
    sa.Index("ix_reg_approvals_version", "model_version_id", "notification_id"),
)
reg_deployments = sa.Table(
    "reg_deployments",
    metadata,
    sa.Column("model_name", NAME, primary_key=True),
    sa.Column("id", ID, nullable=False),
    sa.Column("champion_version_id", ID, nullable=True),
    sa.Column("champion_number", sa.BigInteger, nullable=True),
    sa.Column("challenger_version_id", ID, nullable=True),
    sa.Column("challenger_number", sa.BigInteger, nullable=True),
    sa.Column("canary_version_id", ID, nullable=True),
    sa.Column("canary_number", sa.BigInteger, nullable=True),
    sa.Column("canary_share", sa.Double, nullable=True),
    sa.Column("stopped", sa.Boolean, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    sa.UniqueConstraint("id", name="uq_reg_deployments_id"),
)
reg_deployment_history = sa.Table(
    "reg_deployment_history",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_name", NAME, nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("model_version_id", ID, nullable=True),
    sa.Column("number", sa.BigInteger, nullable=True),
    sa.Column("share", sa.Double, nullable=True),
    _text("reason", nullable=True),
    _text("actor"),
    sa.Column("recorded_at", TIME, nullable=False),
    sa.Index("ix_reg_deployment_history_model_time", "model_name", "recorded_at"),
)


def version_state(policy: dict[str, Any] | None, approvals: int, rejections: int) -> str:
    """pending, approved or rejected: the rule of ``ModelVersion.state`` on counts."""
    return approval_state(ApprovalPolicy.from_dict(policy), approvals, rejections)


_HANDLERS, _on = handler_registry()


class Registry(Projection):
    """Keeps the ``reg_*`` tables: the current state of every governed thing."""

    name = "registry"
    tables = (
        reg_principals,
        reg_api_keys,
        reg_signing_keys,
        reg_dataset_versions,
        reg_code_versions,
        reg_pipeline_names,
        reg_pipelines,
        reg_runs,
        reg_run_metrics,
        reg_run_artifacts,
        reg_models,
        reg_model_versions,
        reg_model_labels,
        reg_approvals,
        reg_deployments,
        reg_deployment_history,
        reg_reproductions,
    )

    def __init__(self) -> None:
        self._metric_rows: list[dict[str, Any]] = []
        self._metric_counts: Counter[str] = Counter()
        # id -> name of pipelines, models and deployments: immutable facts, so a
        # cache can never disagree with the tables it was read from.
        self._names: dict[str, Any] = {}
        # principal id -> roles, for principals whose roles changed in this batch (written at its end)
        self._roles: dict[str, set[str]] = {}
        # rows of tables the registry only ever appends to (never reads or updates), written in end_batch
        self._appends: dict[sa.Table, list[dict[str, Any]]] = {}

    def begin_batch(self, conn: Connection) -> None:
        """Start the batch with empty buffers."""
        self._metric_rows, self._metric_counts = [], Counter()
        self._roles = {}
        self._appends = {}
        if len(self._names) > 100_000:
            self._names.clear()

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Apply one event through the handler registered for its topic."""
        handler = _HANDLERS.get(event.topic)
        if handler is not None:
            handler(self, conn, event)

    def end_batch(self, conn: Connection) -> None:
        """Write the batch's appended rows, roles and metric points and bump the runs' point counts."""
        for table, rows in self._appends.items():
            insert_rows(conn, table, rows)
        self._appends = {}
        if self._roles:
            conn.execute(
                reg_principals.update()
                .where(reg_principals.c.id == sa.bindparam("key"))
                .values(roles=sa.bindparam("new_roles")),
                [{"key": key, "new_roles": json_text(sorted(roles))} for key, roles in sorted(self._roles.items())],
            )
            self._roles = {}
        if self._metric_rows:
            insert_rows(conn, reg_run_metrics, self._metric_rows)
            conn.execute(
                reg_runs.update()
                .where(reg_runs.c.id == sa.bindparam("run"))
                .values(metric_points=reg_runs.c.metric_points + sa.bindparam("points")),
                [{"run": run, "points": n} for run, n in sorted(self._metric_counts.items())],
            )
        self._metric_rows, self._metric_counts = [], Counter()

    def _append(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Buffer a row of a table the registry only appends to (written in :meth:`end_batch`)."""
        self._appends.setdefault(table, []).append(row)

    def reset(self, conn: Connection) -> None:
        """Delete every row and forget cached names."""
        super().reset(conn)
        self._names.clear()

    def _name_of(
        self, conn: Connection, table: sa.Table, column: str, aggregate_id: str, *, required: bool = True
    ) -> Any:
        """``column`` of the row of ``aggregate_id``; None for a missing row that is not ``required``."""
        key = f"{table.name}.{column}:{aggregate_id}"
        if key not in self._names:
            row = conn.execute(sa.select(table.c[column]).where(table.c.id == aggregate_id)).first()
            if row is None:
                if not required:
                    return None
                raise LookupError(f"{table.name} has no row for aggregate {aggregate_id}")
            self._names[key] = row[0]
        return self._names[key]

    # -- principals and keys ---------------------------------------------------

    @_on(Principal.Registered.TOPIC)
    def _principal_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            reg_principals.insert(),
            dict(
                id=e.aggregate_id,
                name=p["name"],
                kind=p["kind"],
                roles=json_text(sorted(set(p["roles"]))),
                active=True,
                registered_at=e.recorded_at,
            ),
        )

    @_on(Principal.RoleGranted.TOPIC, Principal.RoleRevoked.TOPIC)
    def _role_changed(self, conn: Connection, e: ProjectedEvent) -> None:
        # A principal's roles are read once per batch, changed in memory and written in end_batch.
        roles = self._roles.get(e.aggregate_id)
        if roles is None:
            where = reg_principals.c.id == e.aggregate_id
            stored = conn.execute(sa.select(reg_principals.c.roles).where(where)).scalar_one()
            roles = self._roles[e.aggregate_id] = set(json.loads(stored))
        role = e.payload["role"]
        if e.topic == Principal.RoleGranted.TOPIC:
            roles.add(role)
        else:
            roles.discard(role)

    @_on(Principal.Deactivated.TOPIC)
    def _principal_deactivated(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(reg_principals.update().where(reg_principals.c.id == e.aggregate_id).values(active=False))

    @_on(Principal.SigningKeyRegistered.TOPIC)
    def _signing_key(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_signing_keys.insert(),
            dict(
                key_id=e.payload["key_id"],
                principal_id=e.aggregate_id,
                public_key_pem=e.payload["public_key_pem"],
                registered_at=e.recorded_at,
            ),
        )

    @_on(ApiKey.Issued.TOPIC)
    def _api_key_issued(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_api_keys.insert(),
            dict(
                id=e.aggregate_id,
                principal_id=e.payload["principal_id"],
                label=e.payload["label"],
                revoked=False,
                issued_at=e.recorded_at,
            ),
        )

    @_on(ApiKey.Revoked.TOPIC)
    def _api_key_revoked(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(reg_api_keys.update().where(reg_api_keys.c.id == e.aggregate_id).values(revoked=True))

    # -- what models are made from -------------------------------------------

    @_on(DatasetVersion.Registered.TOPIC)
    def _dataset_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            reg_dataset_versions.insert(),
            dict(
                id=e.aggregate_id,
                name=p["name"],
                number=p["number"],
                digest=p["digest"],
                size=p["size"],
                format=p["format"],
                schema=json_text(p["schema"]),
                row_count=p["row_count"],
                profile=json_text(p.get("profile", [])),
                datasheet=json_text(p["datasheet"]),
                source=p["source"],
                registered_by=e.actor,
                registered_at=e.recorded_at,
                deprecated=False,
            ),
        )

    @_on(DatasetVersion.Deprecated.TOPIC)
    def _dataset_deprecated(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_dataset_versions.update().where(reg_dataset_versions.c.id == e.aggregate_id).values(deprecated=True)
        )

    @_on(CodeVersion.Registered.TOPIC)
    def _code_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            reg_code_versions.insert(),
            dict(
                id=e.aggregate_id,
                repository=p["repository"],
                commit=p["commit"],
                archive_digest=p["archive_digest"],
                entrypoint=p["entrypoint"],
                registered_by=e.actor,
                registered_at=e.recorded_at,
            ),
        )

    @_on(Pipeline.Created.TOPIC)
    def _pipeline_created(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_pipeline_names.insert(), dict(id=e.aggregate_id, name=e.payload["name"], kind=e.payload["kind"])
        )

    @_on(Pipeline.SpecVersioned.TOPIC)
    def _pipeline_spec(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._name_of(conn, reg_pipeline_names, "name", e.aggregate_id)
        kind = self._name_of(conn, reg_pipeline_names, "kind", e.aggregate_id)
        conn.execute(
            reg_pipelines.insert(),
            dict(
                name=name,
                number=e.payload["number"],
                kind=kind,
                spec=json_text(e.payload["spec"]),
                spec_digest=e.payload["spec_digest"],
                created_by=e.actor,
                created_at=e.recorded_at,
            ),
        )

    # -- runs -----------------------------------------------------------------

    @_on(Run.Requested.TOPIC)
    def _run_requested(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        pipeline_id = p["pipeline_id"]
        # A run names its pipeline by id; the command checked that it exists, but a
        # projection must not stall on a run recorded some other way.
        pipeline_name = (
            None
            if pipeline_id is None
            else self._name_of(conn, reg_pipeline_names, "name", pipeline_id, required=False)
        )
        conn.execute(
            reg_runs.insert(),
            dict(
                id=e.aggregate_id,
                name=p["name"],
                mode=p["mode"],
                pipeline_id=pipeline_id,
                pipeline_name=pipeline_name,
                pipeline_version=p["pipeline_version"],
                spec_digest=p["spec_digest"],
                dataset_version_ids=json_text(p["dataset_version_ids"]),
                code_version_id=p["code_version_id"],
                params=json_text(p["params"]),
                seed=p["seed"],
                device=p["device"],
                status=RunStatus.at_start(p["mode"]).value,
                error=None,
                submitted_by=e.actor,
                requested_at=e.recorded_at,
                finished_at=None,
                metric_points=0,
                reproduces=p.get("reproduces"),
            ),
        )

    @_on(Run.Claimed.TOPIC)
    def _run_claimed(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_runs.update()
            .where(reg_runs.c.id == e.aggregate_id)
            .values(status=RunStatus.CLAIMED.value, runner_id=e.payload["runner_id"])
        )

    @_on(Run.EnvironmentCaptured.TOPIC)
    def _run_environment(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_runs.update()
            .where(reg_runs.c.id == e.aggregate_id)
            .values(
                status=RunStatus.RUNNING.value,
                environment_digest=e.payload["environment_digest"],
                device=e.payload["device"],
            )
        )

    @_on(Run.Abandoned.TOPIC)
    def _run_abandoned(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_runs.update()
            .where(reg_runs.c.id == e.aggregate_id)
            .values(status=RunStatus.ABANDONED.value, error=e.payload["reason"], finished_at=e.recorded_at)
        )

    @_on(Run.ReproductionVerified.TOPIC)
    def _run_verified(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        self._append(
            reg_reproductions,
            dict(
                notification_id=e.notification_id,
                run_id=e.aggregate_id,
                reproduction_run_id=p["reproduction_run_id"],
                verdict="verified",
                method=p["method"],
                tolerance=p["tolerance"],
                details=json_text(p["details"]),
                recorded_at=e.recorded_at,
            ),
        )

    @_on(Run.ReproductionDiverged.TOPIC)
    def _run_diverged(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        self._append(
            reg_reproductions,
            dict(
                notification_id=e.notification_id,
                run_id=e.aggregate_id,
                reproduction_run_id=p["reproduction_run_id"],
                verdict="diverged",
                method=None,
                tolerance=None,
                details=json_text(p["differences"]),
                recorded_at=e.recorded_at,
            ),
        )

    @_on(Run.ParamsLogged.TOPIC)
    def _run_params(self, conn: Connection, e: ProjectedEvent) -> None:
        where = reg_runs.c.id == e.aggregate_id
        params = json.loads(conn.execute(sa.select(reg_runs.c.params).where(where)).scalar_one())
        conn.execute(reg_runs.update().where(where).values(params=json_text({**params, **e.payload["params"]})))

    @_on(Run.MetricsLogged.TOPIC)
    def _run_metrics(self, conn: Connection, e: ProjectedEvent) -> None:
        metrics = e.payload["metrics"]
        self._metric_rows.extend(
            {
                "notification_id": e.notification_id,
                "seq": seq,
                "run_id": e.aggregate_id,
                "key": m["key"],
                "step": m["step"],
                "value": m["value"],
                "timestamp": m.get("timestamp") or e.recorded_at,
            }
            for seq, m in enumerate(metrics)
        )
        self._metric_counts[e.aggregate_id] += len(metrics)

    @_on(Run.ArtifactRecorded.TOPIC)
    def _run_artifact(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        self._append(
            reg_run_artifacts,
            dict(run_id=e.aggregate_id, name=p["name"], digest=p["digest"], size=p["size"], media_type=p["media_type"]),
        )

    @_on(Run.ResourcesRecorded.TOPIC)
    def _run_resources(self, conn: Connection, e: ProjectedEvent) -> None:
        where = reg_runs.c.id == e.aggregate_id
        conn.execute(reg_runs.update().where(where).values(resources=json_text(e.payload["resources"])))

    @_on(Run.Finished.TOPIC)
    def _run_finished(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(
            reg_runs.update()
            .where(reg_runs.c.id == e.aggregate_id)
            .values(status=e.payload["status"], error=e.payload["error"], finished_at=e.recorded_at)
        )

    # -- tags and descriptions ----------------------------------------------------

    def _merge_tags(self, conn: Connection, table: sa.Table, where: Any, tags: dict[str, str | None]) -> None:
        """Merge ``tags`` into the row's tags (a None value removes the key)."""
        text = conn.execute(sa.select(table.c.tags).where(where)).scalar()
        if text is None:
            return  # no row (a record the registry does not keep): nothing to annotate
        merged = {**json.loads(text), **tags}
        kept = {k: v for k, v in sorted(merged.items()) if v is not None}
        conn.execute(table.update().where(where).values(tags=json_text(kept)))

    @_on(Run.TagsSet.TOPIC)
    def _run_tags(self, conn: Connection, e: ProjectedEvent) -> None:
        self._merge_tags(conn, reg_runs, reg_runs.c.id == e.aggregate_id, e.payload["tags"])

    @_on(Run.DescriptionSet.TOPIC)
    def _run_description(self, conn: Connection, e: ProjectedEvent) -> None:
        where = reg_runs.c.id == e.aggregate_id
        conn.execute(reg_runs.update().where(where).values(description=e.payload["description"]))

    @_on(DatasetVersion.TagsSet.TOPIC)
    def _dataset_tags(self, conn: Connection, e: ProjectedEvent) -> None:
        t = reg_dataset_versions
        self._merge_tags(conn, t, t.c.id == e.aggregate_id, e.payload["tags"])

    @_on(DatasetVersion.DescriptionSet.TOPIC)
    def _dataset_description(self, conn: Connection, e: ProjectedEvent) -> None:
        t = reg_dataset_versions
        conn.execute(t.update().where(t.c.id == e.aggregate_id).values(description=e.payload["description"]))

    @_on(ModelLabels.Created.TOPIC)
    def _labels_created(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(reg_model_labels.insert(), dict(id=e.aggregate_id, model_name=e.payload["model_name"]))

    def _label_target(self, conn: Connection, e: ProjectedEvent) -> Any:
        """The version row a model label names; None for labels of the model itself."""
        version, t = e.payload.get("version"), reg_model_versions
        if version is None:
            return None
        model_name = self._name_of(conn, reg_model_labels, "model_name", e.aggregate_id)
        return sa.and_(t.c.model_name == model_name, t.c.number == version)

    @_on(ModelLabels.TagSet.TOPIC)
    def _version_tag(self, conn: Connection, e: ProjectedEvent) -> None:
        where = self._label_target(conn, e)
        if where is not None:
            self._merge_tags(conn, reg_model_versions, where, {e.payload["key"]: e.payload["value"]})

    @_on(ModelLabels.DescriptionSet.TOPIC)
    def _version_description(self, conn: Connection, e: ProjectedEvent) -> None:
        where = self._label_target(conn, e)
        if where is not None:
            conn.execute(reg_model_versions.update().where(where).values(description=e.payload["description"]))

    # -- models, versions and approvals ------------------------------------------

    def _policy(self, conn: Connection, model_name: str) -> dict[str, Any] | None:
        text = conn.execute(sa.select(reg_models.c.policy).where(reg_models.c.name == model_name)).scalar()
        return None if text is None else dict(json.loads(text))

    def _restate_versions(self, conn: Connection, model_name: str, policy: dict[str, Any]) -> None:
        t = reg_model_versions
        rows = conn.execute(
            sa.select(t.c.id, t.c.state, t.c.approvals, t.c.rejections).where(t.c.model_name == model_name)
        ).all()
        for row in rows:
            state = version_state(policy, row.approvals, row.rejections)
            if state != row.state:
                conn.execute(t.update().where(t.c.id == row.id).values(state=state))

    @_on(Model.Created.TOPIC)
    def _model_created(self, conn: Connection, e: ProjectedEvent) -> None:
        policy = ApprovalPolicy.from_dict(e.payload["policy"]).to_dict()
        name = e.payload["name"]
        conn.execute(
            reg_models.insert(), dict(name=name, id=e.aggregate_id, policy=json_text(policy), created_at=e.recorded_at)
        )
        # A model's first version is saved before the model itself, so it exists already.
        self._restate_versions(conn, name, policy)

    @_on(Model.PolicyChanged.TOPIC)
    def _model_policy(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._name_of(conn, reg_models, "name", e.aggregate_id)
        policy = ApprovalPolicy.from_dict(e.payload["policy"]).to_dict()
        conn.execute(reg_models.update().where(reg_models.c.name == name).values(policy=json_text(policy)))
        self._restate_versions(conn, name, policy)

    @_on(ModelVersion.Registered.TOPIC)
    def _version_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            reg_model_versions.insert(),
            dict(
                id=e.aggregate_id,
                model_name=p["model_name"],
                number=p["number"],
                run_id=p["run_id"],
                run_digest=p["run_digest"],
                artifact_name=p["artifact_name"],
                artifact_digest=p["artifact_digest"],
                input_schema=json_text(p["input_schema"]),
                registered_by=e.actor,
                registered_at=e.recorded_at,
                state=version_state(self._policy(conn, p["model_name"]), 0, 0),
                approvals=0,
                rejections=0,
            ),
        )

    @_on(ModelVersion.ApprovalGranted.TOPIC, ModelVersion.ApprovalRejected.TOPIC)
    def _version_decided(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        approve = e.topic == ModelVersion.ApprovalGranted.TOPIC
        self._append(
            reg_approvals,
            dict(
                notification_id=e.notification_id,
                model_version_id=e.aggregate_id,
                approver=p["approver"],
                key_id=p["key_id"],
                decision="approve" if approve else "reject",
                statement=json_text(p["statement"]),
                signature=p["signature"],
                recorded_at=e.recorded_at,
            ),
        )
        t = reg_model_versions
        row = conn.execute(
            sa.select(t.c.model_name, t.c.approvals, t.c.rejections).where(t.c.id == e.aggregate_id)
        ).one()
        approvals, rejections = row.approvals + approve, row.rejections + (not approve)
        state = version_state(self._policy(conn, row.model_name), approvals, rejections)
        conn.execute(
            t.update().where(t.c.id == e.aggregate_id).values(approvals=approvals, rejections=rejections, state=state)
        )

    # -- deployments ------------------------------------------------------------

    def _history(self, conn: Connection, e: ProjectedEvent, model_name: str, action: str, **values: Any) -> None:
        self._append(
            reg_deployment_history,
            dict(
                notification_id=e.notification_id,
                model_name=model_name,
                action=action,
                reason=e.payload.get("reason"),
                actor=e.actor,
                recorded_at=e.recorded_at,
                **values,
            ),
        )

    def _deployment_name(self, conn: Connection, e: ProjectedEvent) -> str:
        return str(self._name_of(conn, reg_deployments, "model_name", e.aggregate_id))

    def _set(self, conn: Connection, e: ProjectedEvent, name: str, **values: Any) -> None:
        conn.execute(
            reg_deployments.update()
            .where(reg_deployments.c.model_name == name)
            .values(updated_at=e.recorded_at, **values)
        )

    @_on(Deployment.Created.TOPIC)
    def _deployment_created(self, conn: Connection, e: ProjectedEvent) -> None:
        name = e.payload["model_name"]
        conn.execute(
            reg_deployments.insert(),
            dict(model_name=name, id=e.aggregate_id, stopped=False, retired=False, updated_at=e.recorded_at),
        )
        self._history(conn, e, name, "created")

    @_on(Deployment.ChampionSet.TOPIC, Deployment.RolledBack.TOPIC)
    def _champion(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._deployment_name(conn, e)
        vid, number = e.payload["model_version_id"], e.payload["number"]
        values: dict[str, Any] = {"champion_version_id": vid, "champion_number": number}
        if e.topic == Deployment.ChampionSet.TOPIC:
            t = reg_deployments
            row = conn.execute(
                sa.select(t.c.challenger_version_id, t.c.canary_version_id).where(t.c.model_name == name)
            ).one()
            # A promoted version stops being the challenger or the canary (as in the aggregate).
            if row.challenger_version_id == vid:
                values |= {"challenger_version_id": None, "challenger_number": None}
            if row.canary_version_id == vid:
                values |= {"canary_version_id": None, "canary_number": None, "canary_share": None}
        self._set(conn, e, name, **values)
        action = "champion" if e.topic == Deployment.ChampionSet.TOPIC else "rollback"
        self._history(conn, e, name, action, model_version_id=vid, number=number)

    @_on(Deployment.ChallengerSet.TOPIC)
    def _challenger(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._deployment_name(conn, e)
        vid, number = e.payload["model_version_id"], e.payload["number"]
        self._set(conn, e, name, challenger_version_id=vid, challenger_number=number)
        self._history(conn, e, name, "challenger", model_version_id=vid, number=number)

    @_on(Deployment.CanarySet.TOPIC)
    def _canary(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._deployment_name(conn, e)
        vid, number = e.payload["model_version_id"], e.payload["number"]
        share = None if vid is None else e.payload["share"]
        self._set(conn, e, name, canary_version_id=vid, canary_number=number, canary_share=share)
        self._history(conn, e, name, "canary", model_version_id=vid, number=number, share=share)

    @_on(Deployment.Stopped.TOPIC, Deployment.Resumed.TOPIC)
    def _kill_switch(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._deployment_name(conn, e)
        stopped = e.topic == Deployment.Stopped.TOPIC
        self._set(conn, e, name, stopped=stopped)
        self._history(conn, e, name, "stop" if stopped else "resume")

    @_on(Deployment.Retired.TOPIC)
    def _retired(self, conn: Connection, e: ProjectedEvent) -> None:
        name = self._deployment_name(conn, e)
        cleared = {
            f"{role}_{field}": None
            for role in ("champion", "challenger", "canary")
            for field in ("version_id", "number")
        }
        self._set(conn, e, name, retired=True, canary_share=None, **cleared)
        self._history(conn, e, name, "retire")


Registry.topics = tuple(_HANDLERS)
