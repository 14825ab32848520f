"""Predictions, model reports, drift alerts and data subjects (read models), and
the subject key vault (operational state, outside the ledger).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID, NAME = sa.String(64), sa.String(200)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("prediction_id", ID, primary_key=True),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("model_version_id", ID, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("shadow_of", ID, nullable=True),
        sa.Column("subject_id", sa.String(200), nullable=True),
        sa.Column("caller", sa.String(200), nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("correct", sa.Boolean, nullable=True),
        sa.Column("abs_error", sa.Float, nullable=True),
        sa.Column("outcome_position", sa.BigInteger, nullable=True),
        sa.Column("override", sa.Text, nullable=True),
        sa.Column("overrides", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_predictions_model_position", "predictions", ["model_name", "position"])
    op.create_index("ix_predictions_request", "predictions", ["request_id"])
    op.create_index("ix_predictions_subject", "predictions", ["subject_id"])
    op.create_index("ix_predictions_shadow", "predictions", ["shadow_of"])
    op.create_table(
        "model_reports",
        sa.Column("model_version_id", ID, primary_key=True),
        sa.Column("kind", sa.String(40), primary_key=True),
        sa.Column("report_id", ID, nullable=False),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("attachments", sa.Text, nullable=True),
        sa.Column("computed_from", sa.Text, nullable=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_model_reports_model", "model_reports", ["model_name", "number"])
    op.create_table(
        "drift_alerts",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("model_version_id", ID, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("drifted_features", sa.Text, nullable=False),
        sa.Column("statistics", sa.Text, nullable=False),
        sa.Column("window", sa.Text, nullable=False),
        sa.Column("retraining_run_id", ID, nullable=True),
    )
    op.create_index("ix_drift_alerts_model", "drift_alerts", ["model_name", "position"])
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(200), primary_key=True),
        sa.Column("key_id", ID, nullable=False),
        sa.Column("first_position", sa.BigInteger, nullable=False),
        sa.Column("erased_at", sa.String(40), nullable=True),
        sa.Column("erased_by", sa.String(200), nullable=True),
        sa.Column("erased_position", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "subject_keys",
        sa.Column("key_id", ID, primary_key=True),
        sa.Column("subject_id", sa.String(200), nullable=False, unique=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("subject_keys")
    op.drop_table("subjects")
    op.drop_table("drift_alerts")
    op.drop_table("model_reports")
    op.drop_table("predictions")
