"""A person's label on a document: `PUT` and `DELETE /documents/{id}/label` (scope `label`),
each against the label's revision (`If-Match`), and `GET /documents/{id}/label/history`."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from pydantic import ValidationError

from docingest.api.auth import Scope, require_scope
from docingest.api.bulk import request_validation_error
from docingest.api.deps import EngineDep
from docingest.api.openapi import ERROR_RESPONSES
from docingest.labels.service import LabelConflictError, history, put_label, remove_label
from docingest.schemas import DocumentOut, LabelChangeOut, LabelHistory, LabelIn

router = APIRouter(prefix="/documents", tags=["labels"])
LABEL = [require_scope(Scope.LABEL)]
# Who labels in open mode, where no key names anyone: not a valid key name, so never confused.
OPEN_MODE_LABELLER = "(open mode)"
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: ERROR_RESPONSES[409]
    | {
        "description": "`version` is not the version stored, or the document's label is not the "
        "one `If-Match` names (a label to replace or remove needs its revision)"
    }
}
# An entity tag as RFC 9110 writes it, or a bare number: the label's revision.
_REVISION = re.compile(r'^\s*(?:W/)?"?([1-9][0-9]{0,18})"?\s*$')
IF_MATCH_DESCRIPTION = (
    'The `label.revision` you read (`"17"` or `17`): required to replace or remove a label, '
    "none to set the first one; another revision is a `409`"
)


def _revision(
    if_match: Annotated[
        str,
        Header(alias="If-Match", description=IF_MATCH_DESCRIPTION, pattern=_REVISION.pattern),
    ] = "",
) -> int | None:
    """The pattern is in the OpenAPI document, so clients (and generated ones) know it; a value
    outside it is a 422 before this runs. A string, not a nullable one: an absent header is
    absent, never the text `null`."""
    match = _REVISION.match(if_match) if if_match else None
    return None if match is None else int(match.group(1))


RevisionDep = Annotated[int | None, Depends(_revision)]


async def _label_body(request: Request) -> LabelIn:
    """Parsed from the raw body as the documents' routes do: a body that is not UTF-8 or not
    JSON is a 422 like any invalid one (FastAPI's own parsing would answer 400)."""
    try:
        return LabelIn.model_validate_json(await request.body())
    except ValidationError as error:
        raise request_validation_error(error) from None


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="Document not found")


def _labeller(request: Request) -> str:
    return getattr(request.state, "api_key_name", OPEN_MODE_LABELLER)


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
    revision: RevisionDep,
    request: Request,
    response: Response,
    engine: EngineDep,
) -> DocumentOut:
    """Set the document's true category: any name, also one no model knows yet.

    Send the `version` you read to have the label refused (`409`) if the document changed
    since; without it the label applies to the version stored now. A labelled document's label
    is replaced only with `If-Match` naming its revision (`label.revision`), so two reviewers
    cannot both win; the answer's `ETag` is the new label's revision. A new version with other
    content clears the label, a resend of the same text keeps it. `404` until stored.
    """
    try:
        document = put_label(engine, document_id, label, _labeller(request), revision)
    except LabelConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if document is None:
        raise _not_found()
    response.headers["ETag"] = f'"{document.label_revision}"'
    return DocumentOut.model_validate(document)


@router.delete(
    "/{document_id}/label",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=LABEL,
    responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422], **_CONFLICT},
)
def unlabel_document(
    document_id: uuid.UUID, revision: RevisionDep, request: Request, engine: EngineDep
) -> Response:
    """Remove the document's label, named by `If-Match` (`409` without it or when it is not
    the label's revision); `204` also when there is no label, `404` when no document is stored."""
    try:
        found = remove_label(engine, document_id, _labeller(request), revision)
    except LabelConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if not found:
        raise _not_found()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{document_id}/label/history",
    dependencies=[require_scope(Scope.READ, Scope.LABEL)],
    responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]},
)
def label_history(
    document_id: uuid.UUID,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LabelHistory:
    """Who set, replaced or removed the document's label, when, and what it replaced, newest
    first (a label cleared by a new version with other content is not a change anyone made)."""
    changes = history(engine, document_id, limit)
    if changes is None:
        raise _not_found()
    return LabelHistory(items=[LabelChangeOut.model_validate(change) for change in changes])
