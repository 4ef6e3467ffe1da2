"""Where a document enters (`POST /documents`) and where its result is read back."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status

from docingest.api.bulk import NDJSON_TYPES, parse_items
from docingest.api.deps import EnqueuerDep, SessionDep, SettingsDep
from docingest.api.errors import ERROR_RESPONSES
from docingest.db import get_document
from docingest.failures import document_status
from docingest.models import (
    BulkAccepted,
    BulkItemResult,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentStatus,
    QueuedDocument,
)

router = APIRouter(prefix="/documents", tags=["documents"])

_DOCUMENTS_SCHEMA = {"type": "array", "items": {"$ref": "#/components/schemas/DocumentIn"}}
BULK_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _DOCUMENTS_SCHEMA},
            **{
                media_type: {"schema": {"type": "string", "description": "one document a line"}}
                for media_type in NDJSON_TYPES
            },
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={code: ERROR_RESPONSES[code] for code in (413, 429, 503)},
)
async def create_document(
    document: DocumentIn, enqueuer: EnqueuerDep, response: Response
) -> DocumentAccepted:
    """Queue a document for classification; `202` means it is on the queue."""
    [queued] = await enqueuer.submit([document])
    response.headers["Location"] = f"{router.prefix}/{queued.id}"
    return DocumentAccepted(id=queued.id, version=queued.version)


@router.post(
    "/bulk",
    status_code=status.HTTP_202_ACCEPTED,
    responses={code: ERROR_RESPONSES[code] for code in (413, 422, 429, 503)},
    openapi_extra=BULK_REQUEST_BODY,
)
async def create_documents(
    request: Request, enqueuer: EnqueuerDep, settings: SettingsDep
) -> BulkAccepted:
    """Queue many documents: a JSON array, or NDJSON (`application/x-ndjson`).

    Answers one result per item, in order. Valid items are queued even when others are
    rejected; `errors` says whether any was.
    """
    items = parse_items(
        await request.body(),
        request.headers.get("content-type", ""),
        max_items=settings.max_bulk_documents,
    )
    valid = [item for item in items if item.document is not None]
    queued = iter(await enqueuer.submit([item.document for item in valid if item.document]))
    results = [
        BulkItemResult(index=item.index, status=422, errors=item.errors)
        if item.document is None
        else _accepted(item.index, next(queued))
        for item in items
    ]
    rejected = len(items) - len(valid)
    return BulkAccepted(errors=rejected > 0, accepted=len(valid), rejected=rejected, items=results)


def _accepted(index: int, queued: QueuedDocument) -> BulkItemResult:
    return BulkItemResult(index=index, status=202, id=queued.id, version=queued.version)


@router.get("/{document_id}", responses={404: ERROR_RESPONSES[404]})
def read_document(document_id: uuid.UUID, session: SessionDep) -> DocumentOut:
    """A stored, classified document; `404` until the worker has stored it."""
    document = get_document(session, document_id)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return DocumentOut.model_validate(document)


@router.get("/{document_id}/status", responses={404: ERROR_RESPONSES[404]})
def read_status(
    document_id: uuid.UUID, session: SessionDep, enqueuer: EnqueuerDep
) -> DocumentStatus:
    """`queued`, `stored` or `failed` (with its error), for the newest version accepted."""
    found = document_status(session, enqueuer.ledger, document_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return found
