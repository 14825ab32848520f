"""The audit trail's time watermarks kept per block of 1,024 notification ids (``audit_time_blocks``)
instead of per event: concurrent writers interleave their times, which made the projector rewrite the
low watermark of most recent rows on most batches.

The blocks are filled from the per-event watermarks they replace (a block's high watermark is the
highest of its events', its low watermark the lowest), which are then dropped. Downgrading gives each
event its block's watermarks: looser than the per-event ones, and as correct.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

WATERMARKS = ("high_watermark", "low_watermark")
# Blocks of 1,024 notification ids (projections.audit_trail.TIME_BLOCK).
FILL_BLOCKS = (
    "INSERT INTO audit_time_blocks (block, high_watermark, low_watermark) "
    "SELECT notification_id / 1024, max(high_watermark), min(low_watermark) "
    "FROM audit_events GROUP BY notification_id / 1024"
)
FILL_EVENTS = (
    "UPDATE audit_events SET "
    "high_watermark = (SELECT b.high_watermark FROM audit_time_blocks b WHERE b.block = audit_events.notification_id / 1024), "
    "low_watermark = (SELECT b.low_watermark FROM audit_time_blocks b WHERE b.block = audit_events.notification_id / 1024)"
)


def upgrade() -> None:
    op.create_table(
        "audit_time_blocks",
        sa.Column("block", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("high_watermark", sa.String(32), nullable=False),
        sa.Column("low_watermark", sa.String(32), nullable=False),
    )
    for column in WATERMARKS:
        op.create_index(f"ix_audit_time_blocks_{column}", "audit_time_blocks", [column, "block"])
    op.execute(FILL_BLOCKS)
    for column in WATERMARKS:
        op.drop_index(f"ix_audit_events_{column}", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        for column in WATERMARKS:
            batch.drop_column(column)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        for column in WATERMARKS:
            batch.add_column(sa.Column(column, sa.String(32), nullable=False, server_default=""))
    op.execute(FILL_EVENTS)
    for column in WATERMARKS:
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column, "notification_id"])
    op.drop_table("audit_time_blocks")
