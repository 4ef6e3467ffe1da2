"""PostgreSQL's COPY path of `docingest.documents.store`: its staging table outlives what goes
wrong around it."""

import uuid

import pytest
from sqlalchemy.exc import DataError, ProgrammingError

from docingest.db import make_engine
from docingest.documents import store
from docingest.documents.store import store_batch
from tests.integration.test_db import count, row


def test_a_first_batch_that_fails_leaves_the_staging_table_to_the_next(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging table is made in a transaction of its own: a batch the database refuses
    (a NUL, which PostgreSQL's text cannot hold) rolls back its rows, not the table; and a
    table gone from under a connection (DISCARD TEMP) is made again by its next batch."""
    monkeypatch.setattr(store, "COPY_MIN_ROWS", 2)
    engine = make_engine(postgres_url, pre_ping=False)
    try:
        with pytest.raises(DataError):
            store_batch(engine, [row(uuid.uuid4(), 1, "fine"), row(uuid.uuid4(), 1, "NUL \x00")])
        store_batch(engine, [row(uuid.uuid4(), 1, "a"), row(uuid.uuid4(), 1, "b")])
        assert count(engine) == 2
        with engine.connect() as connection:
            connection.exec_driver_sql("DISCARD TEMP")
            connection.commit()
        with pytest.raises(ProgrammingError):
            store_batch(engine, [row(uuid.uuid4(), 2, "c"), row(uuid.uuid4(), 2, "d")])
        store_batch(engine, [row(uuid.uuid4(), 2, "c"), row(uuid.uuid4(), 2, "d")])
        assert count(engine) == 4
    finally:
        engine.dispose()
