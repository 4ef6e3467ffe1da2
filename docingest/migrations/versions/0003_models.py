"""models registry; per-document top alternatives and tombstones; updated_at index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations import helpers

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = (
    "the registered models (the models table) and the documents' deletions and "
    "alternatives (documents.deleted_at, documents.alternatives)"
)


def upgrade() -> None:
    # First: a build that fails leaves nothing else committed (docingest.migrations.helpers).
    helpers.create_index("ix_documents_updated_at", "documents", ["updated_at"])
    op.create_table(
        "models",
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_models_activated_at", "models", ["activated_at"])
    helpers.add_columns(
        "documents",
        sa.Column("alternatives", sa.JSON(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    helpers.refuse_data_loss(revision, LOSES)
    helpers.drop_index("ix_documents_updated_at", "documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("alternatives")
    op.drop_index("ix_models_activated_at", table_name="models")
    op.drop_table("models")
