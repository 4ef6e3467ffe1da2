"""labels: a person's category beside the model's, and the content digest that keeps it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations import helpers

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELLED = sa.text("label IS NOT NULL")

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "every label (documents.label, label_by, labelled_at, label_version)"


def upgrade() -> None:
    # Rows stored before have no digest: the first label or new version gives them one.
    helpers.add_columns(
        "documents",
        sa.Column("content_sha256", sa.String(64), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("label_by", sa.String(64), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("label_version", sa.BigInteger(), nullable=True),
    )
    helpers.create_index(
        "ix_documents_labelled_at",
        "documents",
        ["labelled_at"],
        postgresql_where=LABELLED,
        sqlite_where=LABELLED,
    )


def downgrade() -> None:
    helpers.refuse_data_loss(revision, LOSES)
    helpers.drop_index("ix_documents_labelled_at", "documents")
    with op.batch_alter_table("documents") as batch:
        for column in ("label_version", "labelled_at", "label_by", "label", "content_sha256"):
            batch.drop_column(column)
