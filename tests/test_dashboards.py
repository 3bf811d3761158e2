"""Dashboards: well-formed, wired to what exists, and showing real data from the real Prometheus."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from dashboards import load_dashboards, metric_names, panels, queries, substitute, variables_used
from prom import PROMETHEUS_DIR, binary
from shop import REPO
from shoplib.services import SERVICES
from stack import datasources

DASHBOARDS = load_dashboards()
ALL_QUERIES = [q for name, d in DASHBOARDS.items() for q in queries(name, d)]
PROMQL = [q for q in ALL_QUERIES if q.language == "promql"]
RULES = [
    rule
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.rules.yml"))
    for group in yaml.safe_load(path.read_text())["groups"]
    for rule in group["rules"]
]

# Series only the backends themselves produce, which no native test can scrape. Names as the pinned versions
# define them: Tempo 3.0.3 (modules/generator/processor/{spanmetrics,servicegraphs}, modules/distributor,
# pkg/receiver) and Loki 3.7.6 (pkg/distributor, pkg/validation). Their panels are checked by name only.
BACKEND_METRICS = {
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency_bucket",
    "traces_spanmetrics_latency_count",
    "traces_spanmetrics_latency_sum",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
    "traces_service_graph_request_client_seconds_bucket",
    "tempo_distributor_spans_received_total",
    "tempo_discarded_spans_total",
    "tempo_receiver_refused_spans",
    "tempo_receiver_accepted_spans",
    "loki_distributor_lines_received_total",
    "loki_discarded_samples_total",
}


def test_the_three_dashboards_are_provisioned_with_the_uids_links_use():
    assert {d["uid"] for d in DASHBOARDS.values()} == {"shop-overview", "shop-service", "shop-telemetry"}
    assert all(d["tags"] == ["shop"] for d in DASHBOARDS.values())


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panels_are_well_formed(name):
    dashboard = DASHBOARDS[name]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provisioned = set(datasources())
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), f"{panel['title']!r} needs a description"
        assert panel["datasource"]["uid"] in provisioned
        assert all(t["datasource"]["uid"] in provisioned for t in panel["targets"])
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']!r} needs a unit"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_links_resolve_and_variables_exist(name):
    dashboard = DASHBOARDS[name]
    text = json.dumps(dashboard)
    uids = {d["uid"] for d in DASHBOARDS.values()}
    assert set(re.findall(r"/d/([\w-]+)", text)) <= uids
    tags = {tag for d in DASHBOARDS.values() for tag in d["tags"]}
    assert all(set(link.get("tags", [])) <= tags for link in dashboard["links"])
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    for query in queries(name, dashboard):
        assert variables_used(query.text) <= defined, f"{query.where}: {query.text}"


def test_alert_dashboard_links_resolve():
    uids = {d["uid"] for d in DASHBOARDS.values()}
    for rule in RULES:
        if "alert" in rule:
            assert re.search(r"/d/([\w-]+)", rule["annotations"]["dashboard"]).group(1) in uids


def test_rate_windows_are_rate_interval_or_an_slo_window():
    for query in PROMQL:
        windows = set(re.findall(r"\[([^\]]+)\]", query.text))
        assert windows <= {"$__rate_interval", "30d"}, f"{query.where}: {windows}"


def _threshold_steps(panel):
    return [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]


def _alert_threshold(name):
    (rule,) = [r for r in RULES if r.get("alert") == name]
    return float(re.search(r">\s*([\d.]+)\s*$", rule["expr"].strip()).group(1))


def test_thresholds_match_the_alert_rules():
    by_title = {(name, p["title"]): p for name, d in DASHBOARDS.items() for p in panels(d)}
    error_rate = _alert_threshold("HighErrorRate")
    assert _threshold_steps(by_title["shop-overview", "Error ratio (5xx)"]) == [error_rate]
    assert _threshold_steps(by_title["shop-service", "Error ratio by route"]) == [error_rate]
    latency = _alert_threshold("HighResponseTime")
    assert _threshold_steps(by_title["shop-overview", "Latency p50 / p95 / p99"]) == [latency]
    assert _threshold_steps(by_title["shop-service", "Latency by route (click a dot for its trace)"]) == [latency]
    per_minute = _alert_threshold("PaymentErrorsSpike") * 60
    assert _threshold_steps(by_title["shop-overview", "Payment failures / min"]) == [pytest.approx(per_minute)]
    slo_factors = sorted(
        {float(f) for r in RULES if "BudgetBurn" in r.get("alert", "") for f in re.findall(r"\(([\d.]+) \*", r["expr"])}
    )
    assert _threshold_steps(by_title["shop-overview", "Burn rate"]) == slo_factors


@pytest.mark.integration
def test_every_promql_expression_passes_promtool(tmp_path):
    # promtool checks expressions inside rule files: one recording rule per dashboard query.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(q.text, {"service": "checkout", "route": ".*"})}
        for i, q in enumerate(PROMQL)
    ]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _grammar_parser():
    node_modules = REPO / "tests" / "grammar" / "node_modules"
    if shutil.which("node") is None or not node_modules.is_dir():
        message = "node and `npm ci --prefix tests/grammar` are needed to parse LogQL/TraceQL (make test does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return ["node", str(REPO / "tests" / "grammar" / "parse.mjs")]


@pytest.mark.integration
def test_logql_and_traceql_parse_with_grafanas_grammars():
    others = [q for q in ALL_QUERIES if q.language in ("logql", "traceql")]
    assert {q.language for q in others} == {"logql", "traceql"}
    lines = "".join(json.dumps({"language": q.language, "query": q.text}) + "\n" for q in others)
    result = subprocess.run(_grammar_parser(), input=lines, capture_output=True, text=True, check=True)
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(parsed) == len(others)
    assert [p for p in parsed if p["errors"]] == []


def test_logs_and_traces_are_queried_by_the_labels_the_backends_create():
    for query in ALL_QUERIES:
        if query.language == "logql":
            # Loki's OTLP ingestion indexes service.name as service_name; everything else is structured metadata.
            selector = re.match(r"\{([^}]*)\}", query.text).group(1)
            assert set(re.findall(r"(\w+)\s*=", selector)) == {"service_name"}
            assert set(re.findall(r"\|\s*(\w+)\s*=", query.text)) <= {"severity_text", "trace_id"}
        if query.language == "traceql":
            assert "resource.service.name" in query.text


def _exposed_metric_names(shop):
    names = set()
    for service in SERVICES:
        for line in requests.get(shop.url(service, "/metrics"), timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


@pytest.fixture(scope="module")
def loaded(shop, prometheus, admin_token):
    """A short load over every route, long enough for the 5 s scrapes and the 1 m rate windows."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shop.exercise_every_route(admin_token)
    time.sleep(6)  # one more scrape after the last request
    return prometheus


def test_every_metric_a_dashboard_or_alert_reads_exists(shop, loaded):
    prometheus = loaded
    exposed = _exposed_metric_names(shop)
    prometheus_own = set(requests.get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=5).json()["data"])
    recorded = {rule["record"] for rule in RULES if "record" in rule}
    used = {name for q in PROMQL for name in metric_names(q.text)}
    used |= {name for rule in RULES for name in metric_names(rule["expr"])}
    unknown = used - exposed - prometheus_own - recorded - BACKEND_METRICS - {"ALERTS"}
    assert unknown == set()
    # The shop's own metrics must come from the services, not from an allow-list.
    assert {
        "http_request_duration_seconds_bucket",
        "payment_errors_total",
        "db_query_duration_seconds_bucket",
        "shop_fault_active",
        "telemetry_exported_items_total",
    } <= exposed


def _finite(result):
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _label_values(prometheus, selector, label):
    params = {"match[]": selector}
    return requests.get(f"{prometheus.url}/api/v1/label/{label}/values", params=params, timeout=5).json()["data"]


def test_every_panel_shows_data_for_every_service_and_route(loaded):
    prometheus = loaded
    services = _label_values(prometheus, "http_request_duration_seconds_count", "service")
    assert sorted(services) == sorted(SERVICES)
    checked, missing = 0, []
    for query in PROMQL:
        if query.empty_is_healthy or metric_names(query.text) & BACKEND_METRICS:
            continue
        used = variables_used(query.text)
        for service in services if "service" in used else [""]:
            routes = _label_values(prometheus, f'http_request_duration_seconds_count{{service="{service}"}}', "route")
            for route in routes if "route" in used else [".*"]:
                expr = substitute(query.text, {"service": service, "route": re.escape(route)})
                checked += 1
                if not _finite(prometheus.query(expr)):
                    missing.append(f"{query.dashboard} / {query.where} [service={service} route={route}]: {expr}")
    print(f"\n{checked} dashboard queries (per service and route) returned data")
    assert checked > 100 and missing == []


def test_only_the_pipeline_dashboard_needs_the_backends_own_metrics():
    # Everything else was checked for data above; these panels read Tempo's and Loki's own series.
    needing = {q.dashboard for q in PROMQL if metric_names(q.text) & BACKEND_METRICS}
    assert needing == {"shop-telemetry"}


def test_the_seed_queries_work_as_written(loaded):
    p95 = loaded.query("histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le, service))")
    assert {sample["metric"]["service"] for sample in p95 if math.isfinite(float(sample["value"][1]))} == set(SERVICES)
    errors = loaded.query("rate(payment_errors_total[5m])")
    assert [sample["metric"]["reason"] for sample in errors] == ["gateway_error"]
