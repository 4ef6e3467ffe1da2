"""The Grafana dashboard and the Prometheus alert rules of deploy/: a panel for each signal,
every query valid for promtool, the alerts firing when they should, and every metric they name
served by a running deployment's /metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "docingest.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# What Grafana puts in a query before Prometheus sees it, for promtool's sake.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}
# The signals the dashboard must show: the words of a panel's title, the metric it must query.
SIGNALS = {
    "ingestion rate": "docingest_worker_documents_processed_total",
    "lag": "docingest_end_to_end_lag_seconds_bucket",
    "queue depths": "docingest_queue_depth",
    "failures": "docingest_worker_documents_failed_total",
    "api latency by route": "docingest_http_request_duration_seconds_bucket",
    "worker batch sizes": "docingest_worker_batch_size_bucket",
    "model confidence": "docingest_worker_confidence_bucket",
    "webhook lag": "docingest_webhook_lag_seconds",
    "webhook deliveries": "docingest_webhook_deliveries_total",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (as root, `make prometheus` installs Debian's prometheus)",
)


def panels() -> list[dict[str, Any]]:
    dashboard: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return list(dashboard["panels"])


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(a recording rule name, the query as Prometheus gets it) for every panel target."""
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield f"dashboard:panel{panel['id']}_{target['refId']}", expr


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


# Everything in a query that is not a metric name: strings, label matchers, ranges, grouping
# label lists, then function names (followed by a parenthesis) and PromQL's keywords.
_NOT_NAMES = re.compile(
    r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    return set(_IDENTIFIER.findall(_NOT_NAMES.sub(" ", expr))) - _KEYWORDS


def test_metric_names_are_told_from_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{status=~"5.."}[5m])))'
        " / on() group_left max without (queue) (b) > 0 unless c offset 5m and 1e3 < time()"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_the_dashboard_has_a_panel_for_each_signal() -> None:
    for words, metric in SIGNALS.items():
        found = [
            panel
            for panel in panels()
            if words in panel["title"].lower()
            and any(metric in metric_names(t["expr"]) for t in panel["targets"])
        ]
        assert found, f"no panel titled '{words}' queries {metric}"
    [latency] = [panel for panel in panels() if panel["title"] == "API latency by route"]
    assert all("by (route, le)" in target["expr"] for target in latency["targets"])


def test_panels_have_unique_ids_and_use_the_dashboard_data_source() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]


@needs_promtool
def test_promtool_checks_every_dashboard_query_and_alert_rule(tmp_path: Path) -> None:
    queries = list(dashboard_queries())
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": n, "expr": e} for n, e in queries]}]
    }
    generated = tmp_path / "dashboard-rules.yml"
    generated.write_text(yaml.safe_dump(rules, sort_keys=False))

    checked = subprocess.run(
        ["promtool", "check", "rules", str(generated), str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    counts = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", checked.stdout)]
    assert counts == [len(queries), len(alert_queries())], checked.stdout


@needs_promtool
def test_the_alerts_fire_when_they_should_and_not_before() -> None:
    tested = subprocess.run(
        ["promtool", "test", "rules", str(ALERTS_TEST)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_the_prometheus_config_loads_the_alert_rules(tmp_path: Path) -> None:
    """As the monitoring profile lays the files out: beside each other, with a key file."""
    for path in (PROMETHEUS_CONFIG, ALERTS):
        shutil.copy(path, tmp_path)
    (tmp_path / "docingest-api-key").write_text("a read key")
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / PROMETHEUS_CONFIG.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_queries())} rules found" in checked.stdout


def test_the_monitoring_profile_mounts_what_prometheus_and_grafana_read() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
                mounts[target] = ROOT / source
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    assert mounts["/etc/prometheus/alerts.yml"] == ALERTS
    assert [c["target"] for c in services["prometheus"]["configs"]] == [
        "/etc/prometheus/docingest-api-key"
    ]
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/docingest.yml").read_text()
    )["providers"][0]
    assert mounts[f"{provider['options']['path']}/docingest.json"] == DASHBOARD
