"""labels: a person's category beside the model's, and the content digest that keeps it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELLED = sa.text("label IS NOT NULL")


def upgrade() -> None:
    # Rows stored before have no digest: the first label or new version gives them one.
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("label", sa.String(200), nullable=True))
        batch.add_column(sa.Column("label_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("label_version", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_documents_labelled_at",
        "documents",
        ["labelled_at"],
        postgresql_where=LABELLED,
        sqlite_where=LABELLED,
    )


def downgrade() -> None:
    op.drop_index("ix_documents_labelled_at", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        for column in ("label_version", "labelled_at", "label_by", "label", "content_sha256"):
            batch.drop_column(column)
