"""webhooks: the Idempotency-Key of the POST that made each endpoint, and its request's digest

A client whose `POST /webhooks` lost its answer could only try again, making a second endpoint
whose secret nobody saw (so every change was delivered twice, once to an endpoint nobody could
verify). With an `Idempotency-Key` header, a retry gets the endpoint the first try made, secret
included; the same key with another request is refused (docs/changes.md). Endpoints made before
have no key.

Undoing it drops the keys: retries of requests made before the downgrade would make new
endpoints. Nothing else is lost, so it declares no `LOSES`.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations import helpers

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    helpers.add_columns(
        "webhooks",
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_digest", sa.String(64), nullable=True),
    )
    helpers.create_index(
        "ix_webhooks_idempotency_key", "webhooks", ["idempotency_key"], unique=True
    )


def downgrade() -> None:
    helpers.drop_index("ix_webhooks_idempotency_key", "webhooks")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("request_digest")
        batch.drop_column("idempotency_key")
