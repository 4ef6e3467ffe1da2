"""Alembic environment: the database is DATABASE_URL unless the caller passes one."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from docingest import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from docingest.db import make_engine
from docingest.settings import get_settings

config = context.config
url = config.attributes.get("url") or get_settings().database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=SQLModel.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """A transaction per migration: the exclusive lock one takes on `documents` (ADD COLUMN,
    SET STORAGE) ends with it, not after the next one's full scan (0004) or index build."""
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
