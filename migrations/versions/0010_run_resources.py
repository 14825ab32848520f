"""What each run used (reg_runs.resources), and runs by the time they finished (for usage over a window).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reg_runs") as batch:
        batch.add_column(sa.Column("resources", sa.Text, nullable=True))
    op.create_index("ix_reg_runs_finished_at", "reg_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_reg_runs_finished_at", table_name="reg_runs")
    with op.batch_alter_table("reg_runs") as batch:
        batch.drop_column("resources")
