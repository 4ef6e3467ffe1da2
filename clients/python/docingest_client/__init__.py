"""The Python client of the docingest API: `Client` (blocking) and `AsyncClient` (asyncio).

    from docingest_client import Client

    with Client("http://127.0.0.1:8000") as client:
        accepted = client.add("The striker scored twice as Chelsea beat Arsenal")

Answers are the API's own pydantic models (`docingest_client.schemas`). Needs httpx and pydantic
only; the service (`docingest`) ships this package too, as `from docingest import Client`.

A receiver of the service's webhooks checks each delivery with `verify(body, headers, secret)`
(`docingest_client.webhooks`), which answers its changes once the signature holds.
"""

from docingest_client.client import (
    API_KEY_VARIABLE,
    CONNECTION_ATTEMPTS,
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    FINAL,
    RETRIED,
    URL_VARIABLE,
    ApiError,
    AsyncClient,
    Client,
    DocingestError,
    DocumentLike,
    IdLike,
    NotFoundError,
    UnavailableError,
    batches,
    retry_after,
)
from docingest_client.schemas import (
    BulkAccepted,
    BulkItemResult,
    Change,
    ChangesDelivery,
    ChangesHead,
    ChangesPage,
    DocumentAccepted,
    DocumentIn,
    DocumentOut,
    DocumentPage,
    DocumentQuery,
    DocumentStatus,
    ModelCard,
    ModelSummary,
    Stats,
    WebhookCreated,
    WebhookOut,
)
from docingest_client.webhooks import WebhookVerificationError, verify

__all__ = [
    "API_KEY_VARIABLE",
    "CONNECTION_ATTEMPTS",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "FINAL",
    "RETRIED",
    "URL_VARIABLE",
    "ApiError",
    "AsyncClient",
    "BulkAccepted",
    "BulkItemResult",
    "Change",
    "ChangesDelivery",
    "ChangesHead",
    "ChangesPage",
    "Client",
    "DocingestError",
    "DocumentAccepted",
    "DocumentIn",
    "DocumentLike",
    "DocumentOut",
    "DocumentPage",
    "DocumentQuery",
    "DocumentStatus",
    "IdLike",
    "ModelCard",
    "ModelSummary",
    "NotFoundError",
    "Stats",
    "UnavailableError",
    "WebhookCreated",
    "WebhookOut",
    "WebhookVerificationError",
    "batches",
    "retry_after",
    "verify",
]
