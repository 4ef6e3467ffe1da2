"""Where a document enters (`POST /documents`) and where its result is read back."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import ValidationError

from docingest.api.bulk import NDJSON_TYPES, parse_items, request_validation_error
from docingest.api.deps import EnqueuerDep, SessionDep, SettingsDep
from docingest.api.errors import ERROR_RESPONSES
from docingest.db import get_document
from docingest.failures import document_status
from docingest.models import (
    BulkAccepted,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentStatus,
    QueuedDocument,
)

router = APIRouter(prefix="/documents", tags=["documents"])


def _json_body(*, array: bool = False) -> dict[str, Any]:
    """The request body as OpenAPI should show it, for routes that read the raw body."""
    schema = DocumentIn.model_json_schema()
    content: dict[str, Any] = {
        "application/json": {"schema": {"type": "array", "items": schema} if array else schema}
    }
    if array:
        ndjson = {"schema": {"type": "string", "description": "one document a line"}}
        content |= dict.fromkeys(NDJSON_TYPES, ndjson)
    return {"requestBody": {"required": True, "content": content}}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentAccepted,
    responses={code: ERROR_RESPONSES[code] for code in (413, 422, 429, 503)},
    openapi_extra=_json_body(),
)
async def create_document(request: Request, enqueuer: EnqueuerDep) -> Response:
    """Queue a document for classification; `202` means it is on the queue.

    The hot path: pydantic parses and validates the raw body in one pass (no `json.loads`, no
    FastAPI body machinery) and the answer is written with orjson. Errors keep FastAPI's format.
    """
    try:
        document = DocumentIn.model_validate_json(await request.body())
    except ValidationError as error:
        raise request_validation_error(error) from None
    [queued] = await enqueuer.submit([document])
    return Response(
        orjson.dumps({"id": str(queued.id), "version": queued.version, "status": "queued"}),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
        headers={"Location": f"{router.prefix}/{queued.id}"},
    )


@router.post(
    "/bulk",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkAccepted,
    responses={code: ERROR_RESPONSES[code] for code in (413, 422, 429, 503)},
    openapi_extra=_json_body(array=True),
)
async def create_documents(
    request: Request, enqueuer: EnqueuerDep, settings: SettingsDep
) -> Response:
    """Queue many documents: a JSON array, or NDJSON (`application/x-ndjson`).

    Answers one result per item, in order. Valid items are queued even when others are
    rejected; `errors` says whether any was.
    """
    items = parse_items(
        await request.body(),
        request.headers.get("content-type", ""),
        max_items=settings.max_bulk_documents,
    )
    valid = [item.document for item in items if item.document is not None]
    queued = iter(await enqueuer.submit(valid))
    results = [
        {"index": item.index, "status": 422, "errors": item.errors}
        if item.document is None
        else _accepted(item.index, next(queued))
        for item in items
    ]
    rejected = len(items) - len(valid)
    answer = {"errors": rejected > 0, "accepted": len(valid), "rejected": rejected}
    return Response(
        orjson.dumps(answer | {"items": results}),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


def _accepted(index: int, queued: QueuedDocument) -> dict[str, Any]:
    return {"index": index, "status": 202, "id": str(queued.id), "version": queued.version}


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
