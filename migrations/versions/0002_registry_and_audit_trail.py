"""The registry (reg_* tables) and the audit trail (audit_events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID, NAME, TIME, DIGEST = sa.String(64), sa.String(200), sa.String(32), sa.String(80)


def _text(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text, nullable=nullable)


def _registry() -> None:
    op.create_table(
        "reg_principals",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        _text("roles"),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("registered_at", TIME, nullable=False),
        sa.UniqueConstraint("name", name="uq_reg_principals_name"),
    )
    op.create_table(
        "reg_api_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column("principal_id", ID, nullable=False),
        _text("label"),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("issued_at", TIME, nullable=False),
    )
    op.create_index("ix_reg_api_keys_principal_id", "reg_api_keys", ["principal_id"])
    op.create_table(
        "reg_signing_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("principal_id", ID, primary_key=True),
        _text("public_key_pem"),
        sa.Column("registered_at", TIME, nullable=False),
    )
    op.create_table(
        "reg_dataset_versions",
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
        sa.UniqueConstraint("name", "number", name="uq_reg_dataset_versions_name_number"),
    )
    op.create_table(
        "reg_code_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("repository", sa.String(500), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("archive_digest", DIGEST, nullable=True),
        _text("entrypoint", nullable=True),
        _text("registered_by"),
        sa.Column("registered_at", TIME, nullable=False),
    )
    op.create_table(
        "reg_pipeline_names",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.UniqueConstraint("name", name="uq_reg_pipeline_names_name"),
    )
    op.create_table(
        "reg_pipelines",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(20), nullable=False),
        _text("spec"),
        sa.Column("spec_digest", DIGEST, nullable=False),
        _text("created_by"),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "reg_runs",
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
    )
    op.create_index("ix_reg_runs_status_requested_at", "reg_runs", ["status", "requested_at"])
    op.create_table(
        "reg_run_metrics",
        sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        _text("timestamp"),
    )
    op.create_index("ix_reg_run_metrics_run_key_step", "reg_run_metrics", ["run_id", "key", "step"])
    op.create_table(
        "reg_run_artifacts",
        sa.Column("run_id", ID, primary_key=True),
        sa.Column("name", NAME, primary_key=True),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        _text("media_type"),
    )
    op.create_table(
        "reg_models",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("id", ID, nullable=False),
        _text("policy"),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("id", name="uq_reg_models_id"),
    )
    op.create_table(
        "reg_model_versions",
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
        sa.UniqueConstraint("model_name", "number", name="uq_reg_model_versions_model_number"),
    )
    op.create_table(
        "reg_approvals",
        sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model_version_id", ID, nullable=False),
        _text("approver"),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        _text("statement"),
        _text("signature"),
        sa.Column("recorded_at", TIME, nullable=False),
    )
    op.create_index("ix_reg_approvals_version", "reg_approvals", ["model_version_id", "notification_id"])
    op.create_table(
        "reg_deployments",
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
    op.create_table(
        "reg_deployment_history",
        sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("model_version_id", ID, nullable=True),
        sa.Column("number", sa.BigInteger, nullable=True),
        sa.Column("share", sa.Double, nullable=True),
        _text("reason", nullable=True),
        _text("actor"),
        sa.Column("recorded_at", TIME, nullable=False),
    )
    op.create_index("ix_reg_deployment_history_model_time", "reg_deployment_history", ["model_name", "recorded_at"])


def _audit_trail() -> None:
    op.create_table(
        "audit_events",
        sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_type", sa.String(100), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("high_watermark", sa.String(32), nullable=False),
        sa.Column("low_watermark", sa.String(32), nullable=False),
    )
    for name, columns in (
        ("ix_audit_events_high_watermark", ["high_watermark", "notification_id"]),
        ("ix_audit_events_low_watermark", ["low_watermark", "notification_id"]),
        ("ix_audit_events_actor", ["actor", "notification_id"]),
        ("ix_audit_events_aggregate", ["aggregate_id", "notification_id"]),
        ("ix_audit_events_event_type", ["event_type", "notification_id"]),
        ("ix_audit_events_model_name", ["model_name", "notification_id"]),
    ):
        op.create_index(name, "audit_events", columns)
    op.create_table(
        "audit_aggregate_models",
        sa.Column("aggregate_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
    )


def upgrade() -> None:
    _registry()
    _audit_trail()


def downgrade() -> None:
    for table in (
        "audit_aggregate_models",
        "audit_events",
        "reg_deployment_history",
        "reg_deployments",
        "reg_approvals",
        "reg_model_versions",
        "reg_models",
        "reg_run_artifacts",
        "reg_run_metrics",
        "reg_runs",
        "reg_pipelines",
        "reg_pipeline_names",
        "reg_code_versions",
        "reg_dataset_versions",
        "reg_signing_keys",
        "reg_api_keys",
        "reg_principals",
    ):
        op.drop_table(table)
