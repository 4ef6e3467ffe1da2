"""Where a document enters (`POST /documents`) and where its result is read back."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import ValidationError

from docingest.api.auth import Scope, require_scope
from docingest.api.bulk import NDJSON_TYPES, read_items, request_validation_error
from docingest.api.deps import EngineDep, EnqueuerDep, SettingsDep
from docingest.api.errors import ERROR_RESPONSES
from docingest.browse import delete_document, list_documents
from docingest.failures import document_status
from docingest.schemas import (
    BulkAccepted,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentPage,
    DocumentQuery,
    DocumentStatus,
    QueuedDocument,
    document_limits,
)
from docingest.store import get_document

router = APIRouter(prefix="/documents", tags=["documents"])
# Routes whose body may be NDJSON; any other body must be JSON (auth.Gate answers 415).
NDJSON_PATHS = frozenset({f"{router.prefix}/bulk"})


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
    dependencies=[require_scope(Scope.INGEST)],
    response_model=DocumentAccepted,
    responses={code: ERROR_RESPONSES[code] for code in (413, 422, 429, 503)},
    openapi_extra=_json_body(),
)
async def create_document(
    request: Request, enqueuer: EnqueuerDep, settings: SettingsDep
) -> Response:
    """Queue a document for classification; `202` means it is on the queue.

    The hot path: pydantic parses and validates the raw body in one pass (no `json.loads`, no
    FastAPI body machinery) and the answer is written with orjson. Errors keep FastAPI's format.
    """
    try:
        document = DocumentIn.model_validate_json(
            await request.body(), context=document_limits(settings)
        )
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
    dependencies=[require_scope(Scope.INGEST)],
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
    items = await read_items(
        request, max_items=settings.max_bulk_documents, limits=document_limits(settings)
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


@router.get(
    "",
    responses={code: ERROR_RESPONSES[code] for code in (422, 503)},
    dependencies=[require_scope(Scope.READ)],
)
def browse_documents(query: Annotated[DocumentQuery, Query()], engine: EngineDep) -> DocumentPage:
    """Stored documents matching the filters, in id order; follow `next_cursor` for more.

    A document that exists during the whole walk is listed exactly once, with its state when
    its page was read; one that arrives meanwhile is listed if its id sorts after the cursor.
    `status=deleted` lists tombstones (documents deleted, with `deleted_at`).
    """
    page, next_cursor = list_documents(engine, query)
    items = [DocumentOut.model_validate(document) for document in page]
    return DocumentPage(items=items, next_cursor=next_cursor)


@router.get(
    "/{document_id}",
    responses={404: ERROR_RESPONSES[404]},
    dependencies=[require_scope(Scope.READ)],
)
def read_document(document_id: uuid.UUID, engine: EngineDep) -> DocumentOut:
    """A stored, classified document; `404` until the worker has stored it, or once deleted."""
    document = get_document(engine, document_id)
    if document is None or document.deleted_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return DocumentOut.model_validate(document)


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={code: ERROR_RESPONSES[code] for code in (404, 503)},
    dependencies=[require_scope(Scope.ADMIN)],
)
def remove_document(document_id: uuid.UUID, engine: EngineDep, enqueuer: EnqueuerDep) -> Response:
    """Delete a document, stored or still queued: older queued versions cannot revive it.

    A later POST with the same id does. `404` when nothing is stored or queued for the id.
    """
    if not delete_document(engine, enqueuer.ledger, document_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{document_id}/status",
    responses={404: ERROR_RESPONSES[404]},
    dependencies=[require_scope(Scope.READ)],
)
def read_status(document_id: uuid.UUID, engine: EngineDep, enqueuer: EnqueuerDep) -> DocumentStatus:
    """`queued`, `stored`, `failed` (with its error) or `deleted`, for the newest version."""
    found = document_status(engine, enqueuer.ledger, document_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return found
