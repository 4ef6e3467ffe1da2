"""pending_documents.published: the broker confirmed it holds the entry's message

A broker that cannot say what its messages carry (RabbitMQ) left the reconciler only the
entry's age to tell a leak (versions reserved by a process that died before publishing) from a
message still waiting: past RECONCILE_ABANDON_SECONDS it dropped both, and the status of a
document whose accepted version waited longer answered its older stored version (found by the
fault campaign, docs/reliability.md C5). An entry whose publish was confirmed is never
abandoned now, only settled. Existing entries count as unconfirmed, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import add_columns

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_columns("pending_documents", sa.Column("published", sa.Boolean(), nullable=True))


def downgrade() -> None:
    """Entries become unconfirmed again: abandoned by age, as before (no document is lost)."""
    with op.batch_alter_table("pending_documents") as batch:
        batch.drop_column("published")
