"""Runner heartbeats.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_heartbeats",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("runner_id", sa.String(200), primary_key=True),
        sa.Column("beat_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runner_heartbeats")
