"""Retired runner keys: a runner whose record went can still be answered by its host.

Revision ID: 0004_retired_keys
Revises: 0003_runner_keys
Create Date: 2026-12-01

A runner whose id was reclaimed or released keeps its key; the host keeps it here (by the
SHA-256 of the identity) so that runner's next join is verified and answered with the real
decision, signed with that key (docs/protocol.md, "Enrolment").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_retired_keys"
down_revision = "0003_runner_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_key",
        sa.Column("identity_hash", sa.String(), nullable=False),
        sa.Column("runner_key", sa.String(), nullable=False),
        sa.Column("retired_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("identity_hash"),
    )
    op.create_index("ix_retired_key_retired_at", "retired_key", ["retired_at"])


def downgrade() -> None:
    op.drop_index("ix_retired_key_retired_at", table_name="retired_key")
    op.drop_table("retired_key")
