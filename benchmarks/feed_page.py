"""What serving the change feed costs in Python, a change: a page of `GET /changes` read and
serialised (`read_changes` + `dump`, as the route does), and a webhook delivery's body built and
signed (as the deliverer does), over changes of BBC documents on an embedded PostgreSQL.

    .venv/bin/python benchmarks/feed_page.py [--changes 20000] [--database-url URL]

Prints this process's CPU a change (the database's own is not in it), median of 5 passes over
every change, and one JSON line. What was loaded before the passes is frozen out of the
collector's sight first (`gc.freeze()`), as the API and the deliverer do once started.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import orjson
from changes_cost import migrated_engine, rows
from docingest_client.webhooks import sign
from sqlalchemy import Engine

from docingest.changes.feed import dump, read_changes
from docingest.changes.relay import relay
from docingest.changes.webhooks.delivery import payload
from docingest.changes.webhooks.endpoints import new_secret
from docingest.documents.store import store_batch
from docingest.model.datasets import load_bbc

SECRET = new_secret()


def fill(engine: Engine, changes: int) -> None:
    texts, labels = load_bbc()
    for start in range(0, changes, 500):
        store_batch(engine, rows(texts, labels, start, min(500, changes - start)))
        relay(engine)


def pages(engine: Engine, limit: int, serve: Callable[[list[dict], int], object]) -> int:
    """Every change, a page at a time; how many."""
    position, served = 0, 0
    while page := read_changes(engine, after=position, limit=limit):
        if not page.items:
            return served
        serve(page.items, page.next)
        served, position = served + len(page.items), page.next
    return served


def page_answer(items: list[dict], next_: int) -> object:
    return dump({"items": items, "next": str(next_)})


def delivery(items: list[dict], _next: int) -> object:
    body = payload(items)
    return sign(SECRET, "message", int(time.time()), body)


def cpu_per_change(engine: Engine, limit: int, serve: Callable[[list[dict], int], object]) -> float:
    """Microseconds of this process's CPU a change, median of 5 passes after a warm one."""
    pages(engine, limit, serve)
    passes = []
    for _ in range(5):
        began = time.process_time()
        served = pages(engine, limit, serve)
        passes.append((time.process_time() - began) / served * 1e6)
    return round(statistics.median(passes), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with migrated_engine(args.database_url, "feed-page") as engine:
        fill(engine, args.changes)
        gc.freeze()  # as the API and the deliverer do once started
        result = {
            "changes": args.changes,
            "page_1000_us": cpu_per_change(engine, 1000, page_answer),
            "delivery_500_us": cpu_per_change(engine, 500, delivery),
        }
    print(
        f"CPU a change: a page of 1,000 read and serialised {result['page_1000_us']} µs; "
        f"a delivery of 500 read, built and signed {result['delivery_500_us']} µs"
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
