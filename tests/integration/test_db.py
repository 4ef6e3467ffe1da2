"""The batched conditional upsert of `docingest.documents.store`, on SQLite and PostgreSQL."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from docingest.documents import store
from docingest.documents.store import get_document, store_batch
from docingest.ledger.floor import version_floor
from docingest.schemas import as_utc, utcnow
from docingest.tables import DOCUMENTS, Document

T0 = utcnow()


@pytest.fixture(autouse=True, params=["copy", "rows"])
def store_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL's two ways, whatever the batch's size: COPY into the staging table and one
    INSERT … SELECT, or one executemany of the upsert (SQLite has one way: both run it)."""
    minimum = 1 if request.param == "copy" else 1_000_000
    monkeypatch.setattr(store, "COPY_MIN_ROWS", minimum)
    return str(request.param)


def row(document_id: uuid.UUID, version: int, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": document_id,
        "content": content,
        "category": "tech",
        "confidence": 0.5,
        "model_version": "m1",
        "version": version,
        "created_at": T0 + timedelta(seconds=version),
        "updated_at": T0 + timedelta(seconds=version),
    } | extra


def read(engine: Engine, document_id: uuid.UUID) -> Document:
    document = get_document(engine, document_id)
    assert document is not None
    return document


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(DOCUMENTS)).scalar_one())


def test_a_batch_is_stored(engine: Engine) -> None:
    ids = [uuid.uuid4() for _ in range(1_234)]
    store_batch(engine, [row(i, 1, f"doc {n}") for n, i in enumerate(ids)])
    assert count(engine) == 1_234
    stored = read(engine, ids[1_000])
    assert stored.content == "doc 1000"
    assert stored.category == "tech"
    assert stored.version == 1


def test_a_newer_version_updates_and_keeps_created_at(engine: Engine) -> None:
    document_id = uuid.uuid4()
    store_batch(engine, [row(document_id, 1, "first")])
    store_batch(engine, [row(document_id, 2, "second", category="sports")])
    stored = read(engine, document_id)
    assert (stored.content, stored.category, stored.version) == ("second", "sports", 2)
    assert as_utc(stored.created_at) == T0 + timedelta(seconds=1)
    assert as_utc(stored.updated_at) == T0 + timedelta(seconds=2)


def test_an_older_or_redelivered_version_changes_nothing(engine: Engine) -> None:
    document_id = uuid.uuid4()
    store_batch(engine, [row(document_id, 5, "newest")])
    store_batch(engine, [row(document_id, 3, "older")])
    store_batch(engine, [row(document_id, 5, "newest again", category="politics")])
    stored = read(engine, document_id)
    assert (stored.content, stored.version, stored.category) == ("newest", 5, "tech")
    assert count(engine) == 1


def test_repeated_ids_in_one_batch_keep_the_newest(engine: Engine) -> None:
    document_id = uuid.uuid4()
    store_batch(
        engine, [row(document_id, 2, "two"), row(document_id, 9, "nine"), row(document_id, 4, "4")]
    )
    assert read(engine, document_id).content == "nine"
    assert count(engine) == 1


def test_a_batch_raises_the_version_floor_in_its_transaction(engine: Engine) -> None:
    assert version_floor(engine) == 0
    store_batch(engine, [row(uuid.uuid4(), 7, "seven"), row(uuid.uuid4(), 3, "three")])
    assert version_floor(engine) == 7


def test_an_empty_batch_writes_nothing(engine: Engine) -> None:
    """`store_isolating` may hand it nothing: no transaction, so not even a version floor."""
    store_batch(engine, [])
    assert (count(engine), version_floor(engine)) == (0, 0)
