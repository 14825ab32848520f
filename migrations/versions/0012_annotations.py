"""Tags and descriptions of runs, dataset versions and model versions in the registry (and which
model each model's labels belong to).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLES = ("reg_runs", "reg_dataset_versions", "reg_model_versions")


def upgrade() -> None:
    op.create_table(
        "reg_model_labels",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
    )
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tags", sa.Text, nullable=False, server_default="{}"))
            batch.add_column(sa.Column("description", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("description")
            batch.drop_column("tags")
    op.drop_table("reg_model_labels")
