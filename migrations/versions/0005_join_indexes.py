"""Indexes for joins decided by indexed queries: a runner's address, and inactive runners by
last-seen time (the reclaim order), so allocating an id loads no other records.

Revision ID: 0005_join_indexes
Revises: 0004_retired_keys
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005_join_indexes"
down_revision = "0004_retired_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runner_physical_ip", "runner", ["physical_ip"])
    op.create_index("ix_runner_status_last_seen", "runner", ["status", "last_seen"])


def downgrade() -> None:
    op.drop_index("ix_runner_status_last_seen", table_name="runner")
    op.drop_index("ix_runner_physical_ip", table_name="runner")
