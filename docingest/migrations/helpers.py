"""What the migrations (docingest/migrations/versions) share: schema changes a large `documents`
table survives online, and downgrades that refuse to drop data unless forced.

On PostgreSQL an index is built CONCURRENTLY, outside the migration's transaction: writers go on
while it scans the table, instead of waiting behind an exclusive lock for the whole build (and,
in one transaction, for every migration after it). SQLite keeps the plain, transactional path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from docingest.db import DataLossError


def _postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def create_index(name: str, table: str, columns: Sequence[str], **kw: Any) -> None:
    """CREATE INDEX CONCURRENTLY on PostgreSQL, so that a re-run after a failed build completes:
    a build that failed leaves an INVALID index of that name, dropped here first; a valid one is
    kept (the migration failed after it)."""
    if not _postgresql():
        op.create_index(name, table, list(columns), **kw)
        return
    with op.get_context().autocommit_block():
        valid = None
        if not op.get_context().as_sql:
            valid = (
                op.get_bind()
                .execute(
                    sa.text(
                        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid "
                        "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
                    ),
                    {"name": name},
                )
                .scalar()
            )
        if valid is False:
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        if valid is not True:
            op.create_index(name, table, list(columns), postgresql_concurrently=True, **kw)


def drop_index(name: str, table: str) -> None:
    """DROP INDEX CONCURRENTLY on PostgreSQL: it waits for the table's readers and writers
    instead of blocking them."""
    if not _postgresql():
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


def add_columns(table: str, *columns: sa.Column[Any]) -> None:
    """Nullable columns without a default: metadata only on PostgreSQL (a brief exclusive lock).
    IF NOT EXISTS there, because a concurrent index build after them may have failed with them
    committed; SQLite adds them in batch mode, in the migration's transaction."""
    if not _postgresql():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(column)
        return
    for column in columns:
        op.add_column(table, column, if_not_exists=True)


def forced() -> bool:
    """`alembic -x force=true downgrade …`, or `docingest.db.downgrade(..., force=True)`."""
    argument = context.get_x_argument(as_dictionary=True).get("force", "")
    return (
        argument.lower() in {"1", "true", "yes"} or context.config.attributes.get("force") is True
    )


def refuse_data_loss(revision: str, loses: str) -> None:
    """First call of every downgrade that drops data: a mistyped revision must not delete the
    labels or the models. Raised before this downgrade changes anything; each migration has its
    own transaction, so the schema stays at this revision (those above it, which drop nothing,
    are undone)."""
    if forced():
        return
    raise DataLossError(
        f"undoing migration {revision} would delete {loses}: refused, the schema stays at "
        f"{revision}. Back the database up, then force it: "
        "`alembic -x force=true downgrade <revision>`"
    )
