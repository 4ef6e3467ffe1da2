"""The Grafana dashboard and the Prometheus alert rules of deploy/: a panel for each signal,
every query valid for promtool, the alerts firing when they should, and every metric they name
served by a running deployment's /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from docingest import Client
from docingest.embedded import wait_until
from tests.faults import Processes, content_for, service_env
from tests.unit.test_grafana import alert_queries, dashboard_queries, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "docingest.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# What Grafana puts in a query before Prometheus sees it, for promtool's sake.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}
# Series Prometheus makes itself, not the service.
SCRAPE_SERIES = {"up"}
# Counted only when it happens, which a healthy deployment never shows: a worker refusing the
# active model (tests/integration/test_registry.py sees it served after a refusal).
EVENT_SERIES = {"docingest_worker_model_refused_total"}


# Everything in a query that is not a metric name: strings, label matchers, ranges, grouping
# label lists, then function names (followed by a parenthesis) and PromQL's keywords.
_NOT_NAMES = re.compile(
    r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def served_names(page: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(page) for sample in family.samples
    }


def test_every_metric_name_is_served_by_a_running_deployment(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """A real API and worker, a few documents through them: every name the dashboard and the
    alerts use is on the API's /metrics page."""
    procs.env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        METRICS_FLUSH_SECONDS="0.2",
        WEBHOOK_ALLOW_PRIVATE="true",
    )
    api = procs.api()
    procs.worker()
    # An unsure classification and a label feed the drift metrics the alerts use.
    unsure = "The weather was mild and nothing much happened in the town on that day."
    with Client(api.base_url) as client:
        added = client.add_many([content_for(n, "grafana") for n in range(20)] + [unsure])
        client.wait(added, timeout=60)
    labelled = httpx.put(
        f"{api.base_url}/documents/{added[0].id}/label", json={"category": "tech"}, timeout=10
    )
    assert labelled.status_code == 200
    # A webhook endpoint: its series are served per endpoint (none runs to deliver to it).
    webhook = httpx.post(
        f"{api.base_url}/webhooks", json={"url": "http://127.0.0.1:9/hook"}, timeout=10
    )
    assert webhook.status_code == 201, webhook.text

    def page() -> str:
        return httpx.get(f"{api.base_url}/metrics", timeout=10).text

    wait_until(
        lambda: "docingest_worker_last_seen_timestamp_seconds{" in page(), 30, "a worker seen"
    )
    used = set().union(
        *(metric_names(e) for e in [*(e for _, e in dashboard_queries()), *alert_queries()])
    )
    assert used - SCRAPE_SERIES - EVENT_SERIES - served_names(page()) == set()
