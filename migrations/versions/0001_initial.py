"""Runner allocations and the event log.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner",
        sa.Column("runner_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("identity", sa.String(), nullable=True),
        sa.Column("hostname", sa.String(), nullable=False),
        sa.Column("physical_ip", sa.String(), nullable=False),
        sa.Column("vni", sa.Integer(), nullable=False),
        sa.Column("subnet", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("vxlan_id", sa.Integer(), nullable=False),
        sa.Column("vxlan_port", sa.Integer(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("runner_id"),
    )
    op.create_index("ix_runner_identity", "runner", ["identity"])
    op.create_index("ix_runner_hostname", "runner", ["hostname"])
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("runner_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("event")
    op.drop_index("ix_runner_hostname", table_name="runner")
    op.drop_index("ix_runner_identity", table_name="runner")
    op.drop_table("runner")
