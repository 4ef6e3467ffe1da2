"""models: the active model is the one with the highest activation number, which the database
assigns, instead of the newest activated_at from the activating host's clock

An activation or rollback from a host whose clock is behind never won, and two activations could
not be told apart in time. Existing activations keep their order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations.helpers import refuse_data_loss

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What undoing it deletes: refused unless forced (docingest.migrations.helpers).
LOSES = "the models' activation order (models.activation)"


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("activation", sa.BigInteger(), nullable=True))
    models = sa.table(
        "models",
        sa.column("version", sa.String),
        sa.column("activated_at", sa.DateTime),
        sa.column("activation", sa.BigInteger),
    )
    bind = op.get_bind()
    activated = bind.execute(
        sa.select(models.c.version)
        .where(models.c.activated_at.is_not(None))
        .order_by(models.c.activated_at, models.c.version)
    ).scalars()
    for number, version in enumerate(list(activated), start=1):
        bind.execute(models.update().where(models.c.version == version).values(activation=number))
    op.create_index("ix_models_activation", "models", ["activation"], unique=True)


def downgrade() -> None:
    refuse_data_loss(revision, LOSES)
    op.drop_index("ix_models_activation", table_name="models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("activation")
