"""Console sessions (operational state, outside the ledger), shared by every API process.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("slot", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("key_digest", sa.String(100), nullable=False),
        sa.Column("csrf_token", sa.String(100), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_index("ix_console_sessions_last_seen", "console_sessions", ["last_seen"])


def downgrade() -> None:
    op.drop_table("console_sessions")
