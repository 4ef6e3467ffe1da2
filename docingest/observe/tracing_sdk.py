"""The OpenTelemetry SDK as the OTEL_* variables set it up: imported only when tracing is on.

Importing this module fails with ImportError without the `docingest[otel]` extra.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


def provider(service: str, exporters: Sequence[str]) -> TracerProvider:
    """Resource, sampler, limits and batch span processors from the environment, one processor
    per exporter named."""
    traced = TracerProvider(resource=resource(service), span_limits=SpanLimits())
    traced.sampler = FollowLinks(traced.sampler)  # before any tracer takes it
    for name in exporters:
        traced.add_span_processor(BatchSpanProcessor(_exporter(name)()))
    return traced


def link_limit() -> int | None:
    """OTEL_SPAN_LINK_COUNT_LIMIT, default 128; None: no limit."""
    return SpanLimits().max_links


def resource(service: str) -> Resource:
    """The SDK's resource from the environment, named `service` unless it names itself."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: service}))
    return detected


class FollowLinks(Sampler):
    """A trace that starts with links to sampled spans is sampled: a worker batch holding a
    traced request is traced too, whatever the ratio. Any other span is sampled as
    OTEL_TRACES_SAMPLER says (a batch holding only untraced requests names none)."""

    def __init__(self, configured: Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        root = not trace.get_current_span(parent_context).get_span_context().is_valid
        if root and any(link.context.trace_flags.sampled for link in links or ()):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"FollowLinks{{{self._configured.get_description()}}}"


def _exporter(name: str) -> type[SpanExporter]:
    """An exporter by its entry point name, as the SDK registers them (`console`,
    `otlp_proto_http`, …); `otlp` follows OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, by default
    http/protobuf (the extra's; grpc needs opentelemetry-exporter-otlp-proto-grpc)."""
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        name = _OTLP_BY_PROTOCOL.get(protocol.strip(), protocol)
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
    exporter: type[SpanExporter] = next(iter(found)).load()
    return exporter
