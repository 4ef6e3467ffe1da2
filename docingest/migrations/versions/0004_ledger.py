"""version floors (the Redis ledger's memory of stored versions); the SQL ledger's tables;
worker metrics for deployments without Redis

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    floors = op.create_table(
        "version_floors",
        sa.Column("writer", sa.String(200), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("writer"),
    )
    counter = op.create_table(
        "version_counter",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "pending_documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_documents_reserved_at", "pending_documents", ["reserved_at"])
    op.create_table(
        "worker_metrics",
        sa.Column("field", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("field"),
    )
    # What is stored already is the floor every ledger starts above.
    highest = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT max(v) FROM (SELECT max(version) AS v FROM documents "
                "UNION ALL SELECT max(version) FROM failures) AS stored"
            )
        )
        .scalar()
    )
    now = datetime.now(UTC)
    op.bulk_insert(floors, [{"writer": "migration", "version": highest or 0, "updated_at": now}])
    op.bulk_insert(counter, [{"name": "documents", "value": highest or 0}])


def downgrade() -> None:
    op.drop_table("worker_metrics")
    op.drop_index("ix_pending_documents_reserved_at", table_name="pending_documents")
    op.drop_table("pending_documents")
    op.drop_table("version_counter")
    op.drop_table("version_floors")
