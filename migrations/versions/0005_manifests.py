"""Reproducibility manifests (run_manifests) and their lookup tables (man_*).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID, NAME, DIGEST = sa.String(64), sa.String(200), sa.String(80)


def upgrade() -> None:
    op.create_table(
        "man_pipelines",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
    )
    op.create_table(
        "man_pipeline_specs",
        sa.Column("pipeline_id", ID, primary_key=True),
        sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("spec_digest", DIGEST, nullable=False),
    )
    op.create_table(
        "man_dataset_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
    )
    op.create_table(
        "man_code_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("repository", sa.String(500), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("archive_digest", DIGEST, nullable=True),
        sa.Column("entrypoint", sa.Text, nullable=True),
    )
    op.create_table(
        "run_manifests",
        sa.Column("run_id", ID, primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("updated_position", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("run_manifests", "man_code_versions", "man_dataset_versions", "man_pipeline_specs", "man_pipelines"):
        op.drop_table(table)
