"""`/review`: the page where people label documents, and the queue it walks.

The page is served like the dashboard (`pages.py`: public while PUBLIC_ENDPOINTS lists
`dashboard`, same CSP); its script reads `/review/queue` and labels with `PUT
/documents/{id}/label`, with the key the user types in (scope `label`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from docingest.api.auth import Scope, require_scope
from docingest.api.deps import EngineDep, SettingsDep
from docingest.api.openapi import ERROR_RESPONSES
from docingest.api.pages import page_file
from docingest.labels.service import categories, review_queue
from docingest.schemas import REVIEW_CURSOR_PATTERN, DocumentOut, ReviewPage

router = APIRouter(prefix="/review", tags=["labels"])
PAGE = [require_scope(Scope.LABEL, Scope.READ, public_if="dashboard")]


@router.get(
    "",
    response_class=Response,
    dependencies=PAGE,
    responses={200: {"content": {"text/html": {}}}},
)
def page() -> Response:
    """The review page: least confident documents first, one key to label each."""
    return page_file("review", "review.html")


# Before `/{name}`, which would take "queue" for a file name.
@router.get(
    "/queue",
    dependencies=[require_scope(Scope.LABEL)],
    responses={code: ERROR_RESPONSES[code] for code in (422, 503)},
)
def queue(
    engine: EngineDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[
        str | None,
        Query(description="`next_cursor` of the previous page", pattern=REVIEW_CURSOR_PATTERN),
    ] = None,
) -> ReviewPage:
    """Unlabelled documents, least confident first, and the categories known so far (the
    active model's and every label given); follow `next_cursor` past documents skipped."""
    documents, next_cursor = review_queue(
        engine, cursor, limit, max_bytes=settings.max_answer_bytes
    )
    return ReviewPage(
        items=[DocumentOut.model_validate(document) for document in documents],
        next_cursor=next_cursor,
        categories=categories(engine),
    )


@router.get("/{name}", response_class=Response, dependencies=PAGE, include_in_schema=False)
def asset(name: str) -> Response:
    return page_file("review", name)
