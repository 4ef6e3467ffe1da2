"""The API's own metrics: requests by method, route template and status, with their latency.

They live in this process's prometheus-client registry or, with `PROMETHEUS_MULTIPROC_DIR` set,
in prometheus-client's files shared by the API processes of one machine (uvicorn with several
workers). The workers' metrics (`worker_metrics.py`) and what is read at scrape time
(`collector.py`) are served beside them by `/metrics`; docs/operations.md lists every metric.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"


@cache
def http_latency() -> Histogram:
    """Registered in prometheus-client's default registry on first use, not on import.

    One histogram, no separate counter: its `_count` series is the number of requests by method,
    route and status, and each observation costs ~2 µs where a counter would add ~1.5 µs more.
    """
    return Histogram(
        "docingest_http_request_duration_seconds",
        "Time from a request's arrival to the end of its answer, by method, route template and "
        "status code; `_count` counts the requests.",
        ["method", "route", "status"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )


class RequestMetrics:
    """ASGI middleware counting requests by route *template* (`/documents/{id}`), not path.

    The labelled child is looked up once per (method, route, status) and kept: the hot path
    costs a dictionary lookup and a histogram observation, ~5 µs in all (docs/operations.md).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._latency = http_latency()
        self._histograms: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
        method: str = scope["method"]
        histogram = self._histograms.get((method, route, status))
        if histogram is None:
            histogram = self._histograms[method, route, status] = self._latency.labels(
                method, route, str(status)
            )
        histogram.observe(seconds)


def api_collector_registry() -> CollectorRegistry:
    """This process's metrics, or with PROMETHEUS_MULTIPROC_DIR those of every API process."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
