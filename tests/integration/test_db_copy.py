"""PostgreSQL's COPY path of `docingest.documents.store`: its staging table outlives what goes
wrong around it."""

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DataError, ProgrammingError

from docingest.db import make_engine
from docingest.documents import store
from docingest.documents.store import content_digest, get_document, store_batch
from docingest.schemas import utcnow
from docingest.tables import CHANGES, DOCUMENTS
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


def test_the_copy_path_keeps_labels_on_the_same_text_and_records_only_what_it_wrote(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conditions of the executemany upsert, in one INSERT … SELECT: a resend of the same
    text keeps its label and the classification it was given against, other text drops it, a
    tombstone drops it, an older version changes nothing; a change for each row written only."""
    monkeypatch.setattr(store, "COPY_MIN_ROWS", 1)
    engine = make_engine(postgres_url, pre_ping=False)
    same, other, deleted, older = (uuid.uuid4() for _ in range(4))
    try:
        texts = {same: "same", other: "before", deleted: "gone", older: "kept"}
        store_batch(engine, [digested(row(i, 1, text)) for i, text in texts.items()])
        with engine.begin() as connection:
            connection.execute(
                update(DOCUMENTS).values(
                    label="mine", label_by="k", labelled_at=utcnow(), label_version=1
                )
            )
        tombstone = {"id": deleted, "content": "", "version": 2, "deleted_at": utcnow()}
        store_batch(
            engine,
            [
                digested(row(same, 2, "same", category="sports")),
                digested(row(other, 2, "after", category="sports")),
                tombstone | {"created_at": utcnow(), "updated_at": utcnow()},
                digested(row(older, 0, "older")),
            ],
        )
        kept = get_document(engine, same)
        assert kept is not None
        assert (kept.version, kept.label, kept.category) == (2, "mine", "tech")
        changed = get_document(engine, other)
        assert changed is not None
        assert (changed.content, changed.label, changed.category) == ("after", None, "sports")
        gone = get_document(engine, deleted)
        assert gone is not None
        assert (gone.deleted_at is not None, gone.label, gone.category) == (True, None, None)
        untouched = get_document(engine, older)
        assert untouched is not None
        assert (untouched.version, untouched.content, untouched.label) == (1, "kept", "mine")
        with engine.connect() as connection:
            found = connection.execute(
                select(CHANGES.c.document_id, CHANGES.c.version, CHANGES.c.kind, CHANGES.c.label)
                .where(CHANGES.c.version == 2)
                .order_by(CHANGES.c.id)
            ).all()
        assert [tuple(change) for change in found] == sorted(
            [(same, 2, "stored", "mine"), (other, 2, "stored", None), (deleted, 2, "deleted", None)]
        )
    finally:
        engine.dispose()


def digested(document: dict[str, Any]) -> dict[str, Any]:
    return document | {"content_sha256": content_digest(document["content"])}
