"""Predictions served elsewhere and logged: where a prediction was made, when its maker says it was made,
and no latency when the maker did not say.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("origin", sa.String(20), nullable=False, server_default="served"))
        batch.add_column(sa.Column("predicted_at", sa.String(40), nullable=True))
        batch.alter_column("latency_ms", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("latency_ms", existing_type=sa.Float, nullable=False)
        batch.drop_column("predicted_at")
        batch.drop_column("origin")
