"""The seed article's design on current versions: what bench.py compares docingest against.

One document per request, one queue message per document, and per message one session, one
transaction and one model call, as in the article's `app/api.py` and `app/worker.py`. Run the
article's way, from the repository root, with DATABASE_URL, BROKER_URL and MODEL_PATH set:

    uvicorn benchmarks.baseline:app                 # one process
    dramatiq benchmarks.baseline -p 4 -t 4

Only the model differs: docingest's classifier (the same file as the service's workers use),
called on a list of one text, where the article called its own scikit-learn pipeline likewise.
It has its own queue and table, so it never touches docingest's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from fastapi import FastAPI, status
from pydantic import UUID4
from sqlmodel import Field, Session, SQLModel, create_engine

from docingest.model.classifier import Classifier

QUEUE_NAME = "baseline"

engine = create_engine(os.environ["DATABASE_URL"])
classifier = Classifier.load(Path(os.environ["MODEL_PATH"]))
dramatiq.set_broker(RedisBroker(url=os.environ["BROKER_URL"]))


def utcnow() -> datetime:
    """The article's datetime.utcnow(), aware: current SQLModel refuses naive datetimes."""
    return datetime.now(UTC)


class DocumentInput(SQLModel):
    id: UUID4 = Field(default_factory=uuid.uuid4, primary_key=True)
    content: str


class Document(DocumentInput, table=True):
    __tablename__ = "baseline_documents"

    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    category: str | None = Field(default=None)


@dramatiq.actor(queue_name=QUEUE_NAME)
def ingest_document(document_json: str) -> None:
    document = DocumentInput.model_validate_json(document_json)
    with Session(engine) as session:
        document_db = session.get(Document, document.id)
        if document_db is None:
            document_db = Document(**document.model_dump())
        else:
            for key, value in document.model_dump(exclude_unset=True).items():
                setattr(document_db, key, value)

        document_db.category = classifier.predict([document_db.content])[0].category
        document_db.updated_at = utcnow()

        session.add(document_db)
        session.commit()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The article created its table at start-up (`create_db_and_tables`)."""
    SQLModel.metadata.create_all(engine, tables=[Document.__table__])  # type: ignore[attr-defined]
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/documents", status_code=status.HTTP_202_ACCEPTED, response_model=DocumentInput)
def add_document(document: DocumentInput) -> DocumentInput:
    ingest_document.send(document.model_dump_json())
    return document
