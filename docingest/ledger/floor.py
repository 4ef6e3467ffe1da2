"""The version floor: the highest version stored, raised in each storing transaction.

A Redis counter found below it (flushed, restored, failed over) jumps to the next epoch
(docs/reliability.md#versions); the SQL ledger's counter starts above it. One row per writing
process (no two processes contend for a row in their storing transactions), raised only upwards;
the rows of processes gone for an hour are pruned by the workers' reconciliation, all but the
highest.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, ScalarSelect, and_, delete, func, select

from docingest.db import insert_for
from docingest.schemas import utcnow
from docingest.tables import VERSION_FLOORS


def raise_floor(connection: Connection, version: int) -> None:
    """Record in the storing transaction how high this process's stored versions went."""
    _raise(connection, _writer(os.getpid()), version)


def record_jump(engine: Engine, version: int) -> None:
    """A Redis counter's jump to a new epoch, recorded before any of its versions is issued:
    a later jump (another failover before anything of this epoch was stored) goes above it."""
    with engine.begin() as connection:
        _raise(connection, "jump:" + _writer(os.getpid()), version)


def _raise(connection: Connection, writer: str, version: int) -> None:
    statement = _floor_statement(connection.dialect.name)
    connection.execute(statement, {"writer": writer, "version": version, "updated_at": utcnow()})


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


def stored_floor() -> ScalarSelect[int]:
    """The highest version ever stored (0 on a new database), as a subquery."""
    return select(func.coalesce(func.max(VERSION_FLOORS.c.version), 0)).scalar_subquery()


def version_floor(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(stored_floor())).scalar_one())


def prune_floors(engine: Engine, idle: timedelta) -> int:
    """Delete the rows not raised for `idle`, except the highest: the floor never falls, and a
    process still storing puts its row back with its next batch."""
    highest = select(func.max(VERSION_FLOORS.c.version)).scalar_subquery()
    statement = delete(VERSION_FLOORS).where(
        and_(VERSION_FLOORS.c.updated_at < utcnow() - idle, VERSION_FLOORS.c.version < highest)
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount
