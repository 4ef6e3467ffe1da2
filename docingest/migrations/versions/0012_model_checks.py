"""model checks: the environments workers run and which models they proved they can load

Activation loaded the artifact in the activating process only; a worker elsewhere with another
scikit-learn could not load it. Each worker process now says which environment it runs
(`model_environments`), and answers an activation's request to load a model there
(`model_checks`): activation waits for those answers (docingest/model/environment.py).

Undoing it deletes nothing that is not rebuilt: workers report again and answer the next
activation's requests, so it declares no `LOSES`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_environments",
        sa.Column("environment", sa.String(300), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refresh_seconds", sa.Float(), nullable=False),
    )
    op.create_table(
        "model_checks",
        sa.Column("environment", sa.String(300), primary_key=True),
        sa.Column("version", sa.String(200), primary_key=True),
        sa.Column("loaded", sa.Boolean(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("model_checks")
    op.drop_table("model_environments")
