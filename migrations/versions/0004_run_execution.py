"""Run execution in the registry: runner, environment digest, reproductions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reg_runs") as batch:
        batch.add_column(sa.Column("runner_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("environment_digest", sa.String(80), nullable=True))
        batch.add_column(sa.Column("reproduces", sa.String(64), nullable=True))
    op.create_table(
        "reg_reproductions",
        sa.Column("notification_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("reproduction_run_id", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("method", sa.String(40), nullable=True),
        sa.Column("tolerance", sa.Float, nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_reg_reproductions_run", "reg_reproductions", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_reg_reproductions_run", table_name="reg_reproductions")
    op.drop_table("reg_reproductions")
    with op.batch_alter_table("reg_runs") as batch:
        batch.drop_column("reproduces")
        batch.drop_column("environment_digest")
        batch.drop_column("runner_id")
