"""OpenTelemetry traces across the API and the workers: off unless asked for, free when off.

`configure` turns tracing on when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER is set and the `docingest[otel]` extra is installed: it then imports
`tracing_sdk`. Otherwise nothing of the SDK is imported, the API keeps FastAPI's telemetry off,
messages carry nothing more, and each helper here returns at its first line
(docs/operations.md#traces has the figures).

A document's way, as spans:
- API: FastAPI's request span (`POST /documents`). Group commit puts the documents of several
  requests into one message, so `send documents` is a child of the first request it carries and
  links to every one of them.
- The message names those requests: their W3C `traceparent`s in the `traceparents` option.
- Worker: a batch holds several messages, so `process documents` starts a trace of its own and
  links to every request whose documents it holds; `classify`, `store` and `settle` are its
  children.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

from docingest.queue.messages import TRACEPARENTS, ingest_message
from docingest.queue.names import DOCUMENTS_QUEUE

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from docingest.queue import MessageQueue
    from docingest.settings import Settings

logger = structlog.get_logger(__name__)

# Requests a message names (a group commit message may hold ENQUEUE_MAX_BATCH requests): the
# SDK's default link limit.
MAX_TRACEPARENTS = 128
_UNTRACED: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)

_provider: SdkTracerProvider | None = None
_tracer: Tracer | None = None
# OTEL_SPAN_LINK_COUNT_LIMIT (None: no limit), applied before the SDK would: each link costs
# ~20 µs of CPU, and the SDK pays it even for links beyond its limit.
_max_links: int | None = MAX_TRACEPARENTS
# Set by `configure` from the settings: what every span of a kind says of the deployment.
_messaging: dict[str, AttributeValue] = {}
_database: dict[str, AttributeValue] = {}

In = TypeVar("In")
Out = TypeVar("Out")
# What the span helpers return: a span, as the current one, for the `with` block.
Scope = AbstractContextManager[Span]


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* variables ask for; none means tracing is off. Unlike the
    SDK's default (`otlp`), an unset OTEL_TRACES_EXPORTER exports only to a configured endpoint."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    if names.lower() == "none":
        return []
    return [name.strip() for name in names.split(",") if name.strip()]


def configure(service: str, settings: Settings) -> TracerProvider | None:
    """Tracing for this process as the OTEL_* variables say, set up once; None when off.

    `service` is the default `service.name` (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    win). Asked for without the extra installed, tracing stays off with a warning. A batch that
    holds a sampled request is sampled (`tracing_sdk.FollowLinks`)."""
    global _provider, _tracer, _max_links
    names = exporter_names(os.environ)
    if _provider is not None or not names:
        return _provider
    try:
        from docingest.observe import tracing_sdk
    except ImportError:
        logger.warning("OTEL_* variables ask for traces: install docingest[otel] to send them")
        return None
    _provider = tracing_sdk.provider(service, names)
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("docingest")
    _max_links = tracing_sdk.link_limit()
    _describe_deployment(settings)
    return _provider


def shutdown() -> None:
    """Export what is buffered: Dramatiq's worker processes end without running atexit."""
    if _provider is not None:
        _provider.shutdown()


def _describe_deployment(settings: Settings) -> None:
    amqp = settings.broker_url.startswith("amqp")
    _messaging.update(
        {
            "messaging.system": "rabbitmq" if amqp else "redis",
            "messaging.destination.name": DOCUMENTS_QUEUE,
        }
    )
    sqlite = settings.database_url.startswith("sqlite")
    _database["db.system.name"] = "sqlite" if sqlite else "postgresql"


# --- the API -------------------------------------------------------------------------------------


def naming_span(
    call: Callable[[In], Awaitable[Out]], method: str, route: str
) -> Callable[[In], Awaitable[Out]]:
    """`call` naming the request span after its route, as FastAPI's router does for the routes
    it serves (`HotRoute` serves one below it)."""
    name = f"{method} {route}"

    async def named(request: In) -> Out:
        span = trace.get_current_span()
        span.update_name(name)
        span.set_attribute("http.route", route)
        return await call(request)

    return named


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent, if it is sampled (else nothing to link to)."""
    context = trace.get_current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def read_traceparent(traceparent: str) -> SpanContext:
    """What `current_traceparent` wrote, read back (3x faster than the W3C propagator: a batch
    may link to 128 requests). A malformed one gives the invalid context, never linked to."""
    try:
        _, trace_id, span_id, flags = traceparent.split("-")
        return SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
        )
    except ValueError:
        return INVALID_SPAN_CONTEXT


def publish(
    queue: MessageQueue, parts: Sequence[list[dict[str, Any]]], origins: Sequence[str | None]
) -> None:
    """Publish one message per part, each naming the requests its documents came from
    (`origins`: each document's request traceparent), in a `send documents` span."""
    messages, start = [], 0
    for part in parts:
        named = _distinct(origins[start : start + len(part)])[:MAX_TRACEPARENTS]
        messages.append(ingest_message(part, named))
        start += len(part)
    carried = _distinct(origins)
    if not carried or _tracer is None:
        queue.publish(messages)
        return
    attributes = _messaging | {
        "messaging.operation.type": "send",
        "messaging.batch.message_count": len(messages),
        "docingest.documents": len(origins),
        "docingest.requests": len(carried),
    }
    parent = trace.set_span_in_context(trace.NonRecordingSpan(read_traceparent(carried[0])))
    with _tracer.start_as_current_span(
        "send documents",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        links=_links(carried),
    ):
        queue.publish(messages)


# --- the worker ----------------------------------------------------------------------------------


def message_traceparents() -> Sequence[str]:
    """The requests the message being processed names (`CurrentMessage` holds it)."""
    if _tracer is None:
        return ()
    message = CurrentMessage.get_current_message()
    return message.options.get(TRACEPARENTS, ()) if message is not None else ()


def processing(traceparents: Iterable[str], *, messages: int, documents: int) -> Scope:
    """The span of a worker batch: a trace of its own, linked to the requests it holds (all of
    them counted, the first OTEL_SPAN_LINK_COUNT_LIMIT linked)."""
    if _tracer is None:
        return _UNTRACED
    held = _distinct(traceparents)
    attributes = _messaging | {
        "messaging.operation.type": "process",
        "messaging.batch.message_count": messages,
        "docingest.documents": documents,
        "docingest.requests": len(held),
    }
    return _tracer.start_as_current_span(
        "process documents", kind=SpanKind.CONSUMER, attributes=attributes, links=_links(held)
    )


def span(name: str, attributes: Mapping[str, AttributeValue], *, database: bool = False) -> Scope:
    """A child of the current span (`database`: it talks to DATABASE_URL); the span it gives
    ignores `set_attribute` when tracing is off."""
    if _tracer is None:
        return _UNTRACED
    return _tracer.start_as_current_span(
        name, attributes={**_database, **attributes} if database else attributes
    )


def _distinct(traceparents: Iterable[str | None]) -> list[str]:
    """Each one once, in order."""
    return list(dict.fromkeys(filter(None, traceparents)))


def _links(traceparents: Sequence[str]) -> list[Link]:
    """To the first OTEL_SPAN_LINK_COUNT_LIMIT (default 128)."""
    return [Link(read_traceparent(tp)) for tp in traceparents[:_max_links]]
