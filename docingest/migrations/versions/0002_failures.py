"""failures: document versions that could not be classified, kept for replay

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import refuse_data_loss

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "the failures kept for replay (the failures table)"


def upgrade() -> None:
    op.create_table(
        "failures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_failures_failed_at", "failures", ["failed_at"])


def downgrade() -> None:
    refuse_data_loss(revision, LOSES)
    op.drop_index("ix_failures_failed_at", table_name="failures")
    op.drop_table("failures")
