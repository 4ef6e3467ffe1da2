"""Where a document enters (`POST /documents`) and where its result is read back."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import ValidationError

from docingest.api.auth import Requirement, Scope, require_scope
from docingest.api.bulk import NDJSON_PATTERN, NDJSON_TYPES, read_items, request_validation_error
from docingest.api.deps import EngineDep, EnqueuerDep, SettingsDep
from docingest.api.openapi import ERROR_RESPONSES, Schema
from docingest.documents.browse import list_documents
from docingest.documents.delete import delete_document
from docingest.documents.status import document_status
from docingest.documents.store import get_document
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
from docingest.settings import Settings

router = APIRouter(prefix="/documents", tags=["documents"])
CAN_INGEST = Requirement((Scope.INGEST,))
BULK_PATH = "/bulk"
DOCUMENT_PATH = "/{document_id}"
# The status monitor of an accepted document (RFC 9110 §15.3.3): a 202's `Location`.
STATUS_PATH = "/{document_id}/status"
# Routes whose body may be NDJSON; any other body must be JSON (auth.Gate answers 415).
NDJSON_PATHS = frozenset({router.prefix + BULK_PATH})
_DOCUMENT_IN = "DocumentIn"
_DOCUMENT_IN_REF = {"$ref": f"#/components/schemas/{_DOCUMENT_IN}"}
_LOCATION = {
    "Location": {
        "description": "The document's status: `GET /documents/{document_id}/status`",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    }
}


def _json_body(*, bulk: bool = False, max_items: int | None = None) -> dict[str, Any]:
    """The request body as OpenAPI should show it, for routes that read the raw body; each app
    adds its limits (`describe_limits`)."""
    array: Schema = {"type": "array", "items": _DOCUMENT_IN_REF, "minItems": 1}
    if max_items is not None:
        array["maxItems"] = max_items
    content: Schema = {"application/json": {"schema": array if bulk else _DOCUMENT_IN_REF}}
    if bulk:
        ndjson = {
            "schema": {
                "type": "string",
                "pattern": NDJSON_PATTERN,
                "description": "one document a line",
            }
        }
        content |= dict.fromkeys(NDJSON_TYPES, ndjson)
    return {"requestBody": {"required": True, "content": content}}


def describe_limits(schema: Schema, settings: Settings) -> None:
    """This app's MAX_DOCUMENT_CHARS and MAX_BULK_DOCUMENTS in its OpenAPI document, and the
    links from an accepted document to the operations that read it.

    The document shares the routes' `openapi_extra` objects: parts are replaced, never changed.
    """
    document = DocumentIn.model_json_schema(ref_template="#/components/schemas/{model}")
    document["properties"]["content"]["maxLength"] = settings.max_document_chars
    schema["components"]["schemas"][_DOCUMENT_IN] = document
    paths = schema["paths"]
    bulk = paths[router.prefix + BULK_PATH]["post"]
    bulk |= _json_body(bulk=True, max_items=settings.max_bulk_documents)
    responses = paths[router.prefix]["post"]["responses"]
    responses["202"] = responses["202"] | {"links": _links(paths)}


def _links(paths: Schema) -> Schema:
    """From a 202 to the reads of the document it accepted. A bulk answer has none: no one
    document stands for it (each accepted item's `id` leads to the same reads)."""
    parameters = {"document_id": "$response.body#/id"}
    return {
        "status": {
            "operationId": paths[router.prefix + STATUS_PATH]["get"]["operationId"],
            "parameters": parameters,
            "description": "Where the document is: queued, stored, failed or deleted",
        },
        "document": {
            "operationId": paths[router.prefix + DOCUMENT_PATH]["get"]["operationId"],
            "parameters": parameters,
            "description": "The document once a worker stored it (404 until then)",
        },
    }


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(CAN_INGEST)],
    response_model=DocumentAccepted,
    responses={
        202: {"description": "Queued", "headers": _LOCATION},
        **{code: ERROR_RESPONSES[code] for code in (422, 429)},
    },
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
        headers={"Location": router.prefix + STATUS_PATH.format(document_id=queued.id)},
    )


@router.post(
    BULK_PATH,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[require_scope(Scope.INGEST)],
    response_model=BulkAccepted,
    responses={
        202: {"description": "Queued, each item that is valid; `items` says which"},
        **{code: ERROR_RESPONSES[code] for code in (413, 422, 429)},
    },
    openapi_extra=_json_body(bulk=True),
)
async def create_documents(
    request: Request, enqueuer: EnqueuerDep, settings: SettingsDep
) -> Response:
    """Queue many documents: a JSON array, or NDJSON (`application/x-ndjson`).

    Answers one result per item, in order. Valid items are queued even when others are
    rejected; `errors` says whether any was. So a body holding invalid documents, which the
    schema forbids, is answered `202` with a `422` for each invalid item, by design (as
    Elasticsearch's `_bulk` does); only a body that is not JSON, not an array or holds no
    document is refused whole (`422`). An accepted item's status is at
    `GET /documents/{id}/status`.
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


@router.get("", dependencies=[require_scope(Scope.READ, Scope.LABEL)])
def browse_documents(
    query: Annotated[DocumentQuery, Query()], engine: EngineDep, settings: SettingsDep
) -> DocumentPage:
    """Stored documents matching the filters, in id order; follow `next_cursor` for more.

    A page holds `limit` documents at most, fewer once it holds about MAX_ANSWER_BYTES (at
    least one): the end of the listing is a null `next_cursor`, never a short page.

    A document that exists during the whole walk is listed exactly once, with its state when
    its page was read; one that arrives meanwhile is listed if its id sorts after the cursor.
    `status=deleted` lists tombstones (documents deleted, with `deleted_at`). `labelled`,
    `max_confidence` and `disagreement` (label ≠ category) select by people's labels.
    """
    page, next_cursor = list_documents(engine, query, max_bytes=settings.max_answer_bytes)
    items = [DocumentOut.model_validate(document) for document in page]
    return DocumentPage(items=items, next_cursor=next_cursor)


@router.get(
    DOCUMENT_PATH,
    responses={404: ERROR_RESPONSES[404]},
    dependencies=[require_scope(Scope.READ, Scope.LABEL)],
)
def read_document(document_id: uuid.UUID, engine: EngineDep) -> DocumentOut:
    """A stored, classified document; `404` until the worker has stored it, or once deleted."""
    document = get_document(engine, document_id)
    if document is None or document.deleted_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return DocumentOut.model_validate(document)


@router.delete(
    DOCUMENT_PATH,
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: ERROR_RESPONSES[404]},
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
    STATUS_PATH,
    responses={404: ERROR_RESPONSES[404]},
    dependencies=[require_scope(Scope.READ)],
)
def read_status(document_id: uuid.UUID, engine: EngineDep, enqueuer: EnqueuerDep) -> DocumentStatus:
    """`queued`, `stored`, `failed` (with its error) or `deleted`, for the newest version."""
    found = document_status(engine, enqueuer.ledger, document_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")
    return found
