"""pending_documents: one row per waiting version, not per id

With one row per id, a request refused after its reservation (a 429, a 503 "nothing was
accepted") removed the entry of its id, which its reservation had written over the entry of a
version accepted before: that version, still queued, was no longer known, and the document's
status answered an older stored version (found by the fault campaign, docs/reliability.md C1).
Existing entries are kept as they are.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _primary_key("id", "version")


def downgrade() -> None:
    """Back to one row per id: the newest waiting version of each is kept."""
    op.execute(
        "DELETE FROM pending_documents WHERE version < "
        "(SELECT max(p.version) FROM pending_documents p WHERE p.id = pending_documents.id)"
    )
    _primary_key("id")


def _primary_key(*columns: str) -> None:
    """PostgreSQL swaps the constraint in place (a small table, a brief lock); SQLite cannot
    alter a primary key, so the table is rebuilt and its rows copied."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE pending_documents DROP CONSTRAINT pending_documents_pkey, "
            f"ADD CONSTRAINT pending_documents_pkey PRIMARY KEY ({', '.join(columns)})"
        )
        return
    op.create_table(
        "pending_documents_new",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*columns),
    )
    op.execute(
        "INSERT INTO pending_documents_new SELECT id, version, reserved_at FROM pending_documents"
    )
    op.drop_index("ix_pending_documents_reserved_at", table_name="pending_documents")
    op.drop_table("pending_documents")
    op.rename_table("pending_documents_new", "pending_documents")
    op.create_index("ix_pending_documents_reserved_at", "pending_documents", ["reserved_at"])
