"""Heartbeats' observed link state on each runner; the event log indexed by time.

Revision ID: 0002_observed
Revises: 0001_initial
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_observed"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runner", sa.Column("observed", sa.JSON(), nullable=False, server_default="{}"))
    op.create_index("ix_event_time", "event", ["time"])


def downgrade() -> None:
    op.drop_index("ix_event_time", table_name="event")
    with op.batch_alter_table("runner") as batch:
        batch.drop_column("observed")
