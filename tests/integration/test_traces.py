"""Traces: real API and worker processes export over OTLP/HTTP to a receiver inside the test,
whose spans must tell one story: requests, the messages that carried them, the batches that
stored them. And with tracing off, nothing of it: no SDK, no FastAPI telemetry, no new option."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry import trace

from docingest.connections import connect
from docingest.observe.tracing import current_traceparent, exporter_names, read_traceparent
from docingest.queue.enqueue import Enqueuer
from docingest.queue.redis import QueueKeys
from docingest.schemas import DocumentIn
from tests.helpers import make_settings


def _otel_installed() -> bool:
    try:
        import opentelemetry.proto
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        return False
    return True


needs_otel = pytest.mark.skipif(
    not _otel_installed(),
    reason="the docingest[otel] extra is not installed (`make test` installs it)",
)


@dataclass(frozen=True)
class Exported:
    """One span as a process exported it; ids in hex, as traceparents spell them."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    links: frozenset[tuple[str, str]]
    attributes: dict[str, Any]

    @property
    def context(self) -> tuple[str, str]:
        return self.trace_id, self.span_id


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver on a free loopback port, keeping every span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ExportHandler)
        self.spans: list[Exported] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name: str) -> list[Exported]:
        with self.lock:
            return [span for span in self.spans if span.name == name]

    def keep(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes)["service.name"]
            for scope_spans in resource_spans.scope_spans:
                spans = [
                    Exported(
                        service=service,
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        links=frozenset(
                            (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                        ),
                        attributes=_attributes(span.attributes),
                    )
                    for span in scope_spans.spans
                ]
                with self.lock:
                    self.spans += spans


class _ExportHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.keep(body)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: getattr(pair.value, pair.value.WhichOneof("value")) for pair in pairs}


@needs_otel
def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from docingest.observe.tracing_sdk import resource

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert resource("docingest-api").attributes["service.name"] == "docingest-api"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert resource("docingest-api").attributes["service.name"] == "from-attributes"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ingest-eu")
    assert resource("docingest-api").attributes["service.name"] == "ingest-eu"


@needs_otel
def test_a_batch_holding_a_sampled_request_is_sampled_whatever_the_ratio() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    from docingest.observe.tracing_sdk import FollowLinks

    sampler = FollowLinks(ParentBasedTraceIdRatio(0))
    sampled = read_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    unsampled = read_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")

    def decision(links: list[trace.Link], parent: trace.SpanContext | None = None) -> bool:
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        result = sampler.should_sample(context, 1, "process documents", links=links)
        return bool(result.decision.is_sampled())

    assert decision([trace.Link(unsampled), trace.Link(sampled)])
    assert not decision([trace.Link(unsampled)]), "the ratio decides"
    assert not decision([])
    assert not decision([trace.Link(sampled)], parent=unsampled), "the parent decides"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(
    environ: dict[str, str], names: list[str]
) -> None:
    assert exporter_names(environ) == names


def test_a_sampled_span_travels_as_a_traceparent_and_comes_back() -> None:
    sampled = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(sampled)):
        traceparent = current_traceparent()
    assert traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    back = read_traceparent(traceparent)
    assert (back.trace_id, back.span_id, back.trace_flags, back.is_remote) == (
        sampled.trace_id,
        sampled.span_id,
        sampled.trace_flags,
        True,
    )
    assert current_traceparent() is None, "no current span: nothing to link to"
    assert not read_traceparent("garbage").is_valid
    unsampled = trace.SpanContext(sampled.trace_id, sampled.span_id, is_remote=False)
    with trace.use_span(trace.NonRecordingSpan(unsampled)):
        assert current_traceparent() is None


def test_untraced_api_loads_no_sdk_and_keeps_fastapi_telemetry_off() -> None:
    """In a process of its own: this one may have loaded the SDK for other tests."""
    probe = (
        "import json, sys; from docingest.api import app; "
        "print(json.dumps({'sdk': 'opentelemetry.sdk.trace' in sys.modules, "
        "'tracing': app._telemetry['tracing']}))"
    )
    environ = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    output = subprocess.run(
        [sys.executable, "-c", probe], env=environ, capture_output=True, check=True, text=True
    ).stdout
    assert json.loads(output.splitlines()[-1]) == {"sdk": False, "tracing": False}


def test_untraced_messages_carry_no_trace_option(
    sqlite_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> None:
    connections = connect(make_settings(sqlite_url, redis_url, model_path, tmp_path))
    try:
        Enqueuer(connections.queue, connections.ledger).send([DocumentIn(content="untraced")])
    finally:
        connections.close()
    [body] = redis.Redis.from_url(redis_url).hvals(QueueKeys.of("documents").messages)
    options = json.loads(body)["options"]
    assert list(options) == ["redis_message_id"]
    uuid.UUID(options["redis_message_id"])
