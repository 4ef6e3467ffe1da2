"""A person's label on a document: `PUT` and `DELETE /documents/{id}/label` (scope `label`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import ValidationError

from docingest.api.auth import Scope, require_scope
from docingest.api.bulk import request_validation_error
from docingest.api.deps import EngineDep
from docingest.api.openapi import ERROR_RESPONSES
from docingest.labels.repository import clear_label
from docingest.labels.service import LabelConflictError, put_label
from docingest.schemas import DocumentOut, LabelIn

router = APIRouter(prefix="/documents", tags=["labels"])
LABEL = [require_scope(Scope.LABEL)]
# Who labels in open mode, where no key names anyone: not a valid key name, so never confused.
OPEN_MODE_LABELLER = "(open mode)"
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: ERROR_RESPONSES[409] | {"description": "`version` is not the version stored"}
}


async def _label_body(request: Request) -> LabelIn:
    """Parsed from the raw body as the documents' routes do: a body that is not UTF-8 or not
    JSON is a 422 like any invalid one (FastAPI's own parsing would answer 400)."""
    try:
        return LabelIn.model_validate_json(await request.body())
    except ValidationError as error:
        raise request_validation_error(error) from None


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")


@router.put(
    "/{document_id}/label",
    dependencies=LABEL,
    responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422], **_CONFLICT},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LabelIn.model_json_schema()}},
        }
    },
)
def label_document(
    document_id: uuid.UUID,
    label: Annotated[LabelIn, Depends(_label_body)],
    request: Request,
    engine: EngineDep,
) -> DocumentOut:
    """Set the document's true category: any name, also one no model knows yet.

    Send the `version` you read to have the label refused (`409`) if the document changed
    since; without it the label applies to the version stored now. A new version with other
    content clears the label, a resend of the same text keeps it. `404` until stored.
    """
    by = getattr(request.state, "api_key_name", OPEN_MODE_LABELLER)
    try:
        document = put_label(engine, document_id, label, by)
    except LabelConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if document is None:
        raise _not_found()
    return DocumentOut.model_validate(document)


@router.delete(
    "/{document_id}/label",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=LABEL,
    responses={404: ERROR_RESPONSES[404]},
)
def unlabel_document(document_id: uuid.UUID, engine: EngineDep) -> Response:
    """Remove the document's label (if it has one); `404` when no document is stored."""
    if not clear_label(engine, document_id):
        raise _not_found()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
