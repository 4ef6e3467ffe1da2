"""Where the feed is pushed: `/webhooks`, endpoints that `docingest webhooks deliver` posts the
change feed to, signed (Standard Webhooks). Scope `admin` for all of it: an endpoint's URL says
where the data goes, and creating one makes the service call out (docs/changes.md, Webhooks).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from pydantic import ValidationError

from docingest.api.auth import Scope, require_scope
from docingest.api.bulk import request_validation_error
from docingest.api.deps import EngineDep, SettingsDep
from docingest.api.openapi import ERROR_RESPONSES, error_response
from docingest.changes.webhooks import endpoints
from docingest.changes.webhooks.targets import TargetRefusedError, resolve
from docingest.schemas import WebhookCreated, WebhookIn, WebhookOut

# RFC 9110 field-value characters a key is made of (the IETF draft's Idempotency-Key is a string).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[require_scope(Scope.ADMIN)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: ERROR_RESPONSES[404]}
_REFUSED = error_response(
    "The body is not what this operation takes, or the URL cannot be delivered to: its host "
    "does not resolve, or resolves to a private, loopback, link-local or otherwise non-global "
    "address (refused unless WEBHOOK_ALLOW_PRIVATE=true); or the `Idempotency-Key` came before "
    "with another request; `detail` says which"
)
_PRUNED = error_response(
    "Changes after the endpoint's position were pruned while it was behind: resume it with "
    "`from=head` (and catch up with GET /documents)"
)


async def _webhook_body(request: Request) -> WebhookIn:
    """Parsed from the raw body as the other routes do: a body that is not UTF-8 or not JSON
    is a 422 like any invalid one."""
    try:
        return WebhookIn.model_validate_json(await request.body())
    except ValidationError as error:
        raise request_validation_error(error) from None


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="Webhook not found")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={422: _REFUSED},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookIn.model_json_schema()}},
        }
    },
)
def create_webhook(
    webhook: Annotated[WebhookIn, Depends(_webhook_body)],
    request: Request,
    response: Response,
    engine: EngineDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Any 1-255 printable ASCII characters, a new value for each new "
            "endpoint (a UUID): a retry with the same key and body gets the endpoint the first "
            "try made, secret included, and makes none (`Idempotent-Replayed: true`)",
        ),
    ] = None,
) -> WebhookCreated:
    """Deliver the changes committed from now on (of `kinds` and `categories`; empty: all) to
    `url`, in order, signed with the `secret` of the answer, shown this once (and again to a
    retry with the same `Idempotency-Key`). `422` when the URL leads nowhere public (its host is
    resolved now, and again before each delivery), or when the `Idempotency-Key` came before
    with another request."""
    try:
        resolve(webhook.url, allow_private=settings.webhook_allow_private)
    except TargetRefusedError as error:
        detail = [{"type": "url_refused", "loc": ["body", "url"], "msg": str(error)}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail) from None
    try:
        created = endpoints.create(
            engine,
            webhook.url,
            kinds=webhook.kinds,
            categories=webhook.categories,
            created_by=getattr(request.state, "api_key_name", None),
            idempotency_key=idempotency_key,
        )
    except endpoints.IdempotencyKeyReusedError as error:
        where = ["header", "Idempotency-Key"]
        detail = [{"type": "idempotency_key_reused", "loc": where, "msg": str(error)}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail) from None
    response.headers["Location"] = f"{router.prefix}/{created.status.endpoint.id}"
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    shown = endpoints.describe(created.status).model_dump()
    return WebhookCreated(**shown, secret=created.status.endpoint.secret)


@router.get("")
def list_webhooks(engine: EngineDep) -> list[WebhookOut]:
    """Every endpoint, oldest first: state, position, lag, the last error. Never a secret."""
    return [endpoints.describe(found) for found in endpoints.list_endpoints(engine)]


@router.get("/{webhook_id}", responses=NOT_FOUND)
def read_webhook(webhook_id: uuid.UUID, engine: EngineDep) -> WebhookOut:
    """An endpoint's state (`paused` says why), position, lag in changes and seconds, the last
    error and since when it fails."""
    try:
        return endpoints.describe(endpoints.get(engine, webhook_id))
    except endpoints.EndpointNotFoundError:
        raise _not_found() from None


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_webhook(webhook_id: uuid.UUID, engine: EngineDep) -> Response:
    """Stop delivering to the endpoint and forget it (a try under way ends unanswered)."""
    try:
        endpoints.remove(engine, webhook_id)
    except endpoints.EndpointNotFoundError:
        raise _not_found() from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/resume", responses={**NOT_FOUND, 409: _PRUNED})
def resume_webhook(
    webhook_id: uuid.UUID,
    engine: EngineDep,
    start: Annotated[
        Literal["position", "head"],
        Query(
            alias="from",
            description="`position` (default): deliver what it missed; `head`: skip it, "
            "deliver the changes committed from now on",
        ),
    ] = "position",
) -> WebhookOut:
    """Deliver again to a paused endpoint (or try a failing one now rather than after its
    backoff), its failures forgotten. `409` when changes after its position were pruned
    meanwhile (CHANGES_RETENTION): resume `from=head`, then catch up with GET /documents."""
    try:
        resumed = endpoints.resume(engine, webhook_id, from_head=start == "head")
    except endpoints.EndpointNotFoundError:
        raise _not_found() from None
    except endpoints.PositionPrunedError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    return endpoints.describe(resumed)
