"""The version floor: the highest version stored, raised in each storing transaction.

A Redis counter found below it (flushed, restored, failed over) jumps to the next epoch
(docs/reliability.md#versions). One row per writing process, raised only upwards.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from docingest.db import insert_for
from docingest.schemas import utcnow
from docingest.tables import VERSION_FLOORS


def raise_floor(connection: Connection, version: int) -> None:
    """Record in the storing transaction how high this process's stored versions went."""
    statement = _floor_statement(connection.dialect.name)
    row = {"writer": _writer(os.getpid()), "version": version, "updated_at": utcnow()}
    connection.execute(statement, row)


@cache
def _floor_statement(dialect_name: str) -> Any:
    """Built once per process, like the batch upsert: building costs more than running it."""
    insert = insert_for(dialect_name, VERSION_FLOORS)
    return insert.on_conflict_do_update(
        index_elements=[VERSION_FLOORS.c.writer],
        set_={"version": insert.excluded.version, "updated_at": insert.excluded.updated_at},
        where=VERSION_FLOORS.c.version < insert.excluded.version,
    )


@cache
def _writer(pid: int) -> str:
    """This process's row; by pid, so that a forked worker process gets its own."""
    return f"{socket.gethostname()}:{pid}"


def version_floor(engine: Engine) -> int:
    """The highest version ever stored (0 on a new database)."""
    with engine.connect() as connection:
        statement = select(func.max(VERSION_FLOORS.c.version))
        return int(connection.execute(statement).scalar() or 0)
