"""labels: a history of every change (set, replaced, removed) and each label's revision, the
precondition for replacing or removing it

Labels were last-writer-wins with no trace. Each label stored before gets a history row
("set", by its labeller, at its time) and that row's id as its revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import refuse_data_loss

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "every label's history (the label_history table, documents.label_revision)"


def upgrade() -> None:
    op.create_table(
        "label_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("document_version", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("previous", sa.String(200), nullable=True),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_label_history_document_id", "label_history", ["document_id"])
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("label_revision", sa.BigInteger(), nullable=True))
    # Labelled rows only (the partial index on labelled_at): a few, next to every document.
    op.execute(
        "INSERT INTO label_history "
        "(document_id, document_version, action, label, changed_by, changed_at) "
        "SELECT id, label_version, 'set', label, label_by, labelled_at FROM documents "
        "WHERE label IS NOT NULL"
    )
    op.execute(
        "UPDATE documents SET label_revision = (SELECT max(h.id) FROM label_history h "
        "WHERE h.document_id = documents.id) WHERE label IS NOT NULL"
    )


def downgrade() -> None:
    refuse_data_loss(revision, LOSES)
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("label_revision")
    op.drop_index("ix_label_history_document_id", table_name="label_history")
    op.drop_table("label_history")
