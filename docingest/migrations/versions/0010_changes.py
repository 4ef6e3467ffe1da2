"""changes: the change feed (`GET /changes`), a row per document write, numbered by the relay

Each write of a document (a version stored, a tombstone, a label set or removed, a
reclassification) inserts a row here in its own transaction; the relay gives committed rows
their `position`. `change_relay` keeps the newest position pruned, so that a cursor older than
the changes kept is answered 410. Documents stored before get no change: a consumer starts from
`GET /documents` and the head (docs/changes.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import refuse_data_loss

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "the change feed (changes, change_relay): every position consumers hold"


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("position", sa.BigInteger(), nullable=True, unique=True),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("alternatives", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_changes_unnumbered",
        "changes",
        ["id"],
        postgresql_where=sa.text("position IS NULL"),
        sqlite_where=sa.text("position IS NULL"),
    )
    op.create_table(
        "change_relay",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("pruned", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO change_relay (id, pruned) VALUES (1, 0)")


def downgrade() -> None:
    refuse_data_loss(revision, LOSES)
    op.drop_table("change_relay")
    op.drop_index("ix_changes_unnumbered", table_name="changes")
    op.drop_table("changes")
