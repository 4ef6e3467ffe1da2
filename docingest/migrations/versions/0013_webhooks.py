"""webhooks: endpoints the change feed is delivered to, each with its position and lease

One row per endpoint (`POST /webhooks`): its URL and filters, its signing secret (a secret at
rest: deliveries are signed with it), the feed position delivered up to (moved only after a 2xx),
how it fares (failures in a row, since when, the last error, paused or not), and the lease that
makes one process at a time deliver to it (docs/changes.md, Webhooks).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import refuse_data_loss

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "the webhook endpoints (webhooks): their URLs, secrets and positions"


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("next_attempt_at", moment, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failing_since", moment, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", moment, nullable=True),
        sa.Column("paused_at", moment, nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("delivered_at", moment, nullable=True),
        sa.Column("deliveries", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", moment, nullable=True),
    )


def downgrade() -> None:
    refuse_data_loss(revision, LOSES)
    op.drop_table("webhooks")
