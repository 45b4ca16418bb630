"""Per-runner keys: the record keeps each enrolled runner's key and only a hash of its identity.

Revision ID: 0003_runner_keys
Revises: 0002_observed
Create Date: 2026-12-01

Identities recorded before this revision are dropped, not hashed: those runners hold no key,
so their records become anonymous and each runner re-enrols on its id by hostname at its next
join (docs/protocol.md, "Enrolment").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_runner_keys"
down_revision = "0002_observed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runner") as batch:
        batch.drop_index("ix_runner_identity")
        batch.drop_column("identity")
        batch.add_column(sa.Column("identity_hash", sa.String(), nullable=True))
        batch.add_column(sa.Column("runner_key", sa.String(), nullable=True))
        batch.create_index("ix_runner_identity_hash", ["identity_hash"])


def downgrade() -> None:
    with op.batch_alter_table("runner") as batch:
        batch.drop_index("ix_runner_identity_hash")
        batch.drop_column("runner_key")
        batch.drop_column("identity_hash")
        batch.add_column(sa.Column("identity", sa.String(), nullable=True))
        batch.create_index("ix_runner_identity", ["identity"])
