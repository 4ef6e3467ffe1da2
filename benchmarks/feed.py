"""Bulk end to end with a consumer following the change feed, against the same run without one.

    make bench BENCH_ARGS="--feed 3"    (bench.py --feed N [--docs 20000] [--bulk-size 500])

The feed cannot be switched off: every stored document writes its change in its own
transaction and every worker process runs the relay, whether anyone reads the feed or not
(docs/changes.md). What alternates is the consumer: 2N bulk end-to-end runs of BBC texts on
the Procfile's processes, its `webhooks` deliverer included (embedded PostgreSQL and Redis, as
`bench.py`'s phases), one with a consumer following `GET /changes` and one webhook endpoint,
and one without either, alternating (with, without, with, …).

The consumer is a thread of this process, a plain HTTP client as any consumer would write:
long polls (`wait=1`, `limit=1000`) following each page's `rel="next"` link from the head
taken before the run, keeping the pages it received, parsed after the run (FeedConsumer says
why). For each document's change it records its lag: from the change's `at` (when the worker
stored the document, just before its commit) to when the consumer had it. Printed: each run's
rate and check, the consumer's lag p50/p99/max per run and over all its runs, and the medians
of the rates with and without it.

The webhook (benchmarks/webhook_follower.py) is delivered to a receiver thread of this process
(`http.server` on 127.0.0.1, answering 200): its lag is from the change's `at` to the first
arrival of a delivery holding it; every stored document's change must arrive (at least once),
and a sample of deliveries has its signature checked with the Python client's `verify`. The
endpoint is created before each measured run and deleted after it; the delivering process runs
throughout, as in a deployment (the runs without an endpoint have its idle polls); the services
run with `WEBHOOK_ALLOW_PRIVATE=true` throughout, a setting read only when an endpoint is
created or delivered to.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from loadgen import Generator
from measure import DesignRun, PhaseResult, warm_docingest
from rich.console import Console
from rich.table import Table
from services import Service
from webhook_follower import WebhookFollower, delivering

from docingest.embedded import wait_until

# Short long polls, so that the consumer stops soon after its run; a page as large as the API
# gives, as a consumer keeping up with bulk ingestion would ask.
POLL_WAIT_SECONDS = 1
PAGE_LIMIT = 1000
# A page without changes: `{"items":[],"next":"<position>"}`.
EMPTY_PAGE_BYTES = 40
progress = Console(stderr=True, width=140)


class FeedConsumer(threading.Thread):
    """Follows `GET /changes` from the head by each page's `rel="next"` link, keeping every
    page as received; `read()` parses them into each stored change's lag (seconds from its
    `at` to its page's arrival).

    It parses after the run, as the receiver does: what a consumer does with its changes runs
    on its own machine in a deployment, and here it would take the service's cores (parsing
    and timing a page of 1,000 changes took 3.8 ms alone; deferring it took the benchmark's
    own CPU a followed document from +0.0165 to +0.009 ms). It still reads every page whole,
    over HTTP, as it comes."""

    def __init__(self, url: str) -> None:
        super().__init__(name="feed-consumer", daemon=True)
        self.url = url
        self.lags: list[float] = []
        self.pages = 0
        self.request_seconds: list[float] = []  # of the pages that brought changes
        self.started_at = threading.Event()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self._received: deque[tuple[float, bytes]] = deque()

    def run(self) -> None:
        timeout = httpx.Timeout(POLL_WAIT_SECONDS + 60.0, connect=10.0)
        try:
            with httpx.Client(base_url=self.url, timeout=timeout) as http:
                after = http.get("/changes/head").raise_for_status().json()["position"]
                params = {"after": after, "limit": PAGE_LIMIT, "wait": POLL_WAIT_SECONDS}
                url = str(httpx.URL("/changes", params=params))
                self.started_at.set()
                while not self.stopping.is_set():
                    sent = time.monotonic()
                    response = http.get(url).raise_for_status()
                    self._received.append((time.time(), response.content))
                    if len(response.content) > EMPTY_PAGE_BYTES:
                        self.request_seconds.append(time.monotonic() - sent)
                    self.pages += 1
                    url = response.links["next"]["url"]
        except BaseException as error:
            self.failure = error
            self.started_at.set()

    def read(self) -> int:
        """The pages received so far parsed into lags; how many stored changes in all."""
        while self._received:
            received, body = self._received.popleft()
            self.lags += [
                received - datetime.fromisoformat(item["at"]).timestamp()
                for item in orjson.loads(body)["items"]
                if item["kind"] == "stored"
            ]
        return len(self.lags)

    def start_following(self) -> None:
        self.start()
        self.started_at.wait(60)
        self._check()

    def finish(self, documents: int, timeout: float) -> None:
        """Once it had a change for each of `documents` (all new: one change each), stop it."""

        def caught_up() -> bool:
            self._check()
            return self.read() >= documents

        try:
            wait_until(caught_up, timeout, f"the consumer's {documents} changes", interval=0.05)
        finally:
            self.stopping.set()
            self.join(POLL_WAIT_SECONDS + 60.0)
            self.read()

    def _check(self) -> None:
        if self.failure is not None:
            raise RuntimeError(f"the feed consumer failed: {self.failure!r}") from self.failure


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max, in milliseconds."""
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def feed(args: argparse.Namespace, generator: Generator, model: Path) -> dict[str, Any]:
    # The webhook's receiver is on 127.0.0.1.
    with (
        warm_docingest(args, generator, model, "feed", WEBHOOK_ALLOW_PRIVATE="true") as run,
        delivering(run) as deliverer,
    ):
        runs = [_run(args, run, deliverer, n, following=n % 2 == 0) for n in range(2 * args.feed)]
        return {"runs": runs}


def _run(
    args: argparse.Namespace, run: DesignRun, deliverer: Service, n: int, *, following: bool
) -> dict[str, Any]:
    phase = f"e2e_bulk_{n + 1}_{'consumer' if following else 'alone'}"
    consumer = FeedConsumer(run.url) if following else None
    webhook = WebhookFollower(run, deliverer) if following else None
    sampler = run.context.sampler
    try:
        if webhook is not None:
            webhook.start()
        if consumer is not None:
            consumer.start_following()
        cpu_before = sampler.cpu_by_label()
        result: PhaseResult = run.end_to_end(
            phase, args.docs, args.bulk_size, args.bulk_concurrency
        )
        # Each process's CPU a document over the run: the following's cost is the consumer's
        # and receiver's threads (`bench`), the deliverer, and what the API and the database
        # spend serving them, on the cores ingestion would otherwise have.
        cpu = {
            label: round((seconds - cpu_before.get(label, 0.0)) * 1000 / result.docs, 4)
            for label, seconds in sampler.cpu_by_label().items()
        }
        if consumer is not None:
            consumer.finish(result.docs, args.timeout)
        if webhook is not None:
            assert result.load is not None
            webhook.finish(set(result.load.accepted), args.timeout)
    finally:
        if webhook is not None:
            webhook.stop()
    lags = consumer.lags if consumer is not None else []
    lag = percentiles(lags)
    webhook_lags = webhook.receiver.lags() if webhook is not None else []
    webhook_lag = percentiles(webhook_lags)
    if webhook is not None:
        assert result.load is not None
        missing = len(set(result.load.accepted) - webhook.receiver.delivered_ids())
        hook: dict[str, Any] | None = {
            "deliveries": webhook.receiver.deliveries,
            "delivered": len(webhook_lags),
            "missing": missing,
            "repeated": webhook.receiver.repeated,
            "verified": webhook.verified(),
            "errors": webhook.receiver.errors,
        }
    else:
        hook = None
    request = percentiles(consumer.request_seconds) if consumer is not None else {}
    outcome: dict[str, Any] = {
        "run": n + 1,
        "consumer": following,
        "docs": result.docs,
        "rate": round(result.rate, 1),
        "lost": result.check.lost if result.check else None,
        "duplicated": result.check.duplicated if result.check else None,
        "other_cores": round(result.other_cores, 2),
        "cpu_ms_per_doc": cpu,
        "consumer_pages": consumer.pages if consumer is not None else None,
        "consumer_request": request,
        "lag": lag,
        "lags": lags,
        "webhook": hook,
        "webhook_lag": webhook_lag,
        "webhook_lags": webhook_lags,
    }
    progress.log(
        f"{phase:26} {result.rate:>8,.0f} docs/s"
        + (f"  consumer lag p50 {lag['p50_ms']} ms p99 {lag['p99_ms']} ms" if lag else "")
        + (f", {outcome['consumer_pages']} pages" if consumer is not None else "")
        + (f", a page with changes p50 {request['p50_ms']} ms" if request else "")
        + (
            f"  webhook lag p50 {webhook_lag['p50_ms']} ms p99 {webhook_lag['p99_ms']} ms"
            if webhook_lag
            else ""
        )
        + (
            f", {hook['deliveries']} deliveries, {hook['missing']} changes missing, "
            f"{hook['repeated']} repeated, {hook['verified']} signatures verified"
            if hook is not None
            else ""
        )
        + f"  lost {outcome['lost']} duplicated {outcome['duplicated']}"
        + f"  (other load {result.other_cores:.2f} cores)"
    )
    return outcome


def summary(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    with_consumer = [r["rate"] for r in runs if r["consumer"]]
    without = [r["rate"] for r in runs if not r["consumer"]]
    lags = [lag for r in runs for lag in r["lags"]]
    webhook_lags = [lag for r in runs for lag in r["webhook_lags"]]
    hooks = [r["webhook"] for r in runs if r["webhook"] is not None]
    median_with, median_without = statistics.median(with_consumer), statistics.median(without)
    return {
        "median_rate_with_consumer": median_with,
        "median_rate_without": median_without,
        "change": round(median_with / median_without - 1, 4) if median_without else None,
        "consumer_lag": percentiles(lags),
        "webhook_lag": percentiles(webhook_lags),
        "webhook_missing": sum(h["missing"] for h in hooks),
        "webhook_repeated": sum(h["repeated"] for h in hooks),
        "webhook_verified": sum(h["verified"] for h in hooks),
        "lost": sum(r["lost"] or 0 for r in runs),
        "duplicated": sum(r["duplicated"] or 0 for r in runs),
    }


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    stdout = Console(width=132, highlight=False)
    table = Table(
        title=f"Bulk end to end, BBC texts, {args.docs:,} documents a run, "
        f"{args.bulk_size}/request c={args.bulk_concurrency}: a consumer following GET /changes "
        "and a webhook, or neither (the feed itself cannot be switched off)"
    )
    columns = ("run", "consumer", "docs/s", "lag p50", "lag p99", "lag max")
    for column in (*columns, "hook p50", "hook p99", "hook max", "hook missing", "lost/dup"):
        table.add_column(column, justify="right")
    table.add_column("other load", justify="right")
    for run in report["runs"]:
        lag = run["lag"]
        table.add_row(
            str(run["run"]),
            "following" if run["consumer"] else "none",
            f"{run['rate']:,.0f}",
            *(f"{lag[k]:,.0f} ms" if lag else "-" for k in ("p50_ms", "p99_ms", "max_ms")),
            *(
                f"{run['webhook_lag'][k]:,.0f} ms" if run["webhook_lag"] else "-"
                for k in ("p50_ms", "p99_ms", "max_ms")
            ),
            str(run["webhook"]["missing"]) if run["webhook"] else "-",
            f"{run['lost']}/{run['duplicated']}",
            f"{run['other_cores']:.2f} cores",
        )
    stdout.print(table)
    total = report["summary"]
    change = total["change"]
    lag = total["consumer_lag"]
    stdout.print(
        f"median {total['median_rate_with_consumer']:,.0f} docs/s with the consumer and webhook, "
        f"{total['median_rate_without']:,.0f} without"
        + (f" ({change:+.1%})" if change is not None else "")
        + (
            f"; the consumer's lag behind storage over all its runs: p50 {lag['p50_ms']:,.0f} "
            f"ms, p99 {lag['p99_ms']:,.0f} ms, max {lag['max_ms']:,.0f} ms"
            if lag
            else ""
        )
        + f"; lost {total['lost']}, duplicated {total['duplicated']}"
    )
    hook = total["webhook_lag"]
    if hook:
        stdout.print(
            f"the webhook's lag behind storage over all its runs: p50 {hook['p50_ms']:,.0f} ms, "
            f"p99 {hook['p99_ms']:,.0f} ms, max {hook['max_ms']:,.0f} ms; stored changes not "
            f"delivered {total['webhook_missing']}, delivered again "
            f"{total['webhook_repeated']}; signatures verified {total['webhook_verified']}"
        )
    for run in report["runs"]:
        del run["lags"], run["webhook_lags"]  # the JSON keeps percentiles, not every lag
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report).decode(), flush=True)
