"""Dashboards: well-formed, wired to what exists, and showing real data from the real Prometheus."""

from __future__ import annotations

import importlib
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
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from conftest import bearer
from dashboards import (
    grid_overlaps,
    load_dashboards,
    logql_fields,
    loki_name,
    metric_names,
    panels,
    queries,
    substitute,
    variables_used,
)
from otlp_receiver import OtlpReceiver
from prom import PROMETHEUS_DIR, binary
from shop import REPO, ShopUnderTest, load_locustfile_module, poll_until
from shoplib.config import load as load_settings
from shoplib.security import sign_token
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
# Series only the responder produces (apps/responder/metrics.py), which the native test shop does not run; checked
# by name against the responder's own instruments.
RESPONDER_METRICS = {"responder_actions_total", "responder_incidents_open"}
# Served by the lab's Locust master (locustfiles/_exporter.py), which the dashboard tests do not run.
LOCUST_METRICS = {"locust_requests_total"}
# What Loki 3.7.6's OTLP ingestion stores with each record besides its attributes (pkg/loghttp/push/otlp.go): the
# logger's name is the instrumentation scope, scope_name.
LOKI_OTLP_METADATA = {
    "severity_text",
    "severity_number",
    "trace_id",
    "span_id",
    "scope_name",
    "observed_timestamp",
    "flags",
}
# The fields the responder's incident_* lines carry (its logger `responder`), as the Incidents panel reads them.
INCIDENT_FIELDS = {
    "incident_id",
    "alertname",
    "alert_service",  # the paged service (`service` would clash with the stdout line's own service field)
    "route",
    "culprit_service",
    "culprit_operation",
    "action",
    "outcome",
    "detect_s",
    "diagnose_s",
    "mitigate_s",
    "recover_s",
}
RELEASE_ANNOTATIONS = [q for q in ALL_QUERIES if q.where == "annotation: Releases"]


def test_the_three_dashboards_are_provisioned_with_the_uids_links_use():
    assert {d["uid"] for d in DASHBOARDS.values()} == {"shop-overview", "shop-service", "shop-telemetry"}
    assert all(d["tags"] == ["shop"] for d in DASHBOARDS.values())


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panels_do_not_overlap(name):
    assert grid_overlaps(DASHBOARDS[name]) == []


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_dashboard_marks_release_changes_from_the_services_logs(name):
    (annotation,) = [a for a in DASHBOARDS[name]["annotations"]["list"] if a["name"] == "Releases"]
    assert annotation["datasource"] == {"type": "loki", "uid": "loki"} and annotation["enable"]
    selector = re.match(r"\{([^}]*)\}", annotation["expr"]).group(1)
    # The service dashboard shows its service's releases; the others every shop service's.
    expected = 'service_name="$service"' if name == "shop-service" else f'service_name=~"{"|".join(SERVICES)}"'
    assert selector == expected
    assert "{{service_name}}" in annotation["titleFormat"]
    assert set(annotation["tagKeys"].split(",")) <= {"service_name"} | logql_fields(annotation["expr"])


def test_the_overview_shows_releases_and_the_responders_incidents():
    overview = DASHBOARDS["shop-overview"]
    rows, current = {}, None
    for panel in overview["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append((panel["type"], panel["title"]))
    (releases,) = [titles for title, titles in rows.items() if title.startswith("Releases")]
    assert releases == [("state-timeline", "Releases by service and track"), ("timeseries", "Request share by version")]
    assert rows["Incidents (responder)"] == [
        ("logs", "Incidents"),
        ("stat", "Responder actions"),
        ("stat", "Open incidents"),
    ]
    by_title = {q.where: q.text for q in queries("shop-overview", overview)}
    assert metric_names(by_title["Releases by service and track"]) == {"shop_release_info"}
    assert "by (service, version)" in by_title["Request share by version"]
    assert metric_names(by_title["Responder actions"]) == {"responder_actions_total"}
    assert "by (action, outcome)" in by_title["Responder actions"]


def _exposed(collector):
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    return {family.name + suffix for family in collector.describe() for suffix in suffixes[family.type]}


def test_the_responder_metrics_the_dashboards_read_are_the_ones_it_defines():
    metrics = importlib.import_module("responder.metrics")
    defined = {
        name for value in vars(metrics).values() if isinstance(value, MetricWrapperBase) for name in _exposed(value)
    }
    read = {name for q in PROMQL for name in metric_names(q.text) if name.startswith("responder_")}
    assert read == RESPONDER_METRICS and read <= defined


def test_the_locust_metrics_the_dashboards_read_are_the_ones_its_master_serves():
    exporter = load_locustfile_module("_exporter")
    served = {
        sample.name
        for family in text_string_to_metric_families(exporter.exposition([exporter.Sent("GET", "catalog /x", 1, 0)], 1))
        for sample in family.samples
    }
    read = {name for q in PROMQL for name in metric_names(q.text) if name.startswith("locust_")}
    assert read == LOCUST_METRICS and read <= served


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
        assert windows <= {"$__rate_interval", "30d", "$__range"}, f"{query.where}: {windows}"
        if "$__range" in windows:  # a count over the time range shown, never a rate
            assert not re.search(r"\brate\(", query.text), query.text


def _threshold_steps(panel):
    return [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]


def _alert_threshold(name):
    (rule,) = [r for r in RULES if r.get("alert") == name]
    # The first comparison closes the alert's condition; any later one is in the part naming a dependency.
    return float(re.search(r">\s*([\d.]+)\s*(?:\)|$)", rule["expr"].strip()).group(1))


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


@pytest.mark.integration
def test_the_drop_panels_show_0_before_tempo_or_loki_ever_dropped(tmp_path):
    """Tempo and Loki create their discard counters at the first drop: until then the panels must read 0, not
    "No data" (which looks like a broken panel). promtool evaluates the panels' queries with no series at all."""
    telemetry = {p["title"]: p for p in panels(DASHBOARDS["shop-telemetry"])}
    losses = ("Dropped by Tempo", "Dropped by Loki", "Lost in the shop: failed exports and drops")
    exprs = [t["expr"] for title in losses for t in telemetry[title]["targets"]]
    fallback = re.compile(r'label_replace\(vector\(0\), "(\w+)", "none"')

    def zero(expr: str) -> str:
        named = fallback.search(expr)
        return f'{{{named.group(1)}="none"}}' if named else "{}"

    tests = [
        {
            "expr": expr.replace("$__rate_interval", "1m"),
            "eval_time": "1m",
            "exp_samples": [{"labels": zero(expr), "value": 0}],
        }
        for expr in exprs
    ]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    path = tmp_path / "drops.test.yml"
    path.write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "tests": [{"input_series": [], "promql_expr_test": tests}]})
    )
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True, check=False
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
            if query.where == "Incidents":
                assert logql_fields(query.text) <= {"service_name"} | INCIDENT_FIELDS, query.text
            elif query in RELEASE_ANNOTATIONS:
                continue  # checked against what the services really export, below
            else:
                assert logql_fields(query.text) <= LOKI_OTLP_METADATA, query.text
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
    unknown = used - exposed - prometheus_own - recorded - BACKEND_METRICS - RESPONDER_METRICS - LOCUST_METRICS
    unknown -= {"ALERTS"}
    assert unknown == set()
    # The shop's own metrics must come from the services, not from an allow-list.
    assert {
        "http_request_duration_seconds_bucket",
        "payment_errors_total",
        "db_query_duration_seconds_bucket",
        "shop_fault_active",
        "telemetry_exported_items_total",
        "telemetry_dropped_items_total",
        "telemetry_queued_items",
    } <= exposed


def _finite(result):
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _label_values(prometheus, selector, label):
    params = {"match[]": selector}
    return requests.get(f"{prometheus.url}/api/v1/label/{label}/values", params=params, timeout=5).json()["data"]


def _promql_regex_escape(text: str) -> str:
    """`text` matched literally in a PromQL regex (RE2): re.escape's `\\-` is an error there."""
    return re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\1", text)


def test_every_panel_shows_data_for_every_service_and_route(loaded):
    prometheus = loaded
    services = _label_values(prometheus, "http_request_duration_seconds_count", "service")
    assert sorted(services) == sorted(SERVICES)
    checked, missing = 0, []
    for query in PROMQL:
        if query.empty_is_healthy or metric_names(query.text) & (BACKEND_METRICS | RESPONDER_METRICS | LOCUST_METRICS):
            continue
        used = variables_used(query.text)
        for service in services if "service" in used else [""]:
            routes = _label_values(prometheus, f'http_request_duration_seconds_count{{service="{service}"}}', "route")
            for route in routes if "route" in used else [".*"]:
                expr = substitute(query.text, {"service": service, "route": _promql_regex_escape(route)})
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


def _exported_release_records(otlp):
    """(stream labels, structured metadata names, line) of each release_* log record, as Loki 3.7.6 would store it:
    indexed service_name from the resource, the scope name and every attribute (renamed) as structured metadata."""
    records = []
    for payload in list(otlp.raw_payloads):
        for resource_logs in ExportLogsServiceRequest.FromString(payload).resource_logs:
            resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    line = record.body.string_value
                    if line.startswith("release_"):
                        metadata = {loki_name(kv.key): kv.value for kv in record.attributes}
                        metadata["scope_name"] = scope_logs.scope.name
                        records.append(({"service_name": resource["service.name"]}, metadata, line))
    return records


@pytest.mark.integration
def test_the_releases_annotation_reads_what_a_release_change_exports(tmp_path):
    """A real catalog exports its release changes over OTLP; the annotation's filters and template read only
    what Loki makes of them (service_name label; scope_name and the attributes as structured metadata)."""
    otlp = OtlpReceiver().start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_TRACES_EXPORTER": "none",  # logs only: every payload the receiver keeps is a logs request
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "SEED_PRODUCTS": "30",
    }
    catalog = ShopUnderTest(tmp_path, env, services=("catalog",)).start()
    try:
        settings = load_settings((), catalog.supervisor.environ)  # the native catalog's secret, not this process's
        admin = bearer(sign_token(settings, "operator", ("admin",), 600))
        release = catalog.url("catalog", "/admin/release")
        canary = requests.put(release, json={"version": "1.4.0", "canary_percent": 10}, headers=admin, timeout=5)
        assert canary.status_code == 200, canary.text
        rollback = requests.post(f"{release}/rollback", json={"reason": "annotation test"}, headers=admin, timeout=5)
        assert rollback.status_code == 200, rollback.text
        records = poll_until(
            lambda: len(_exported_release_records(otlp)) >= 2 and _exported_release_records(otlp),
            what="the two release records at the OTLP receiver",
        )
    finally:
        assert catalog.stop() == 0
        otlp.stop()
    assert [line for _labels, _metadata, line in records] == ["release_canary", "release_rollback"]
    for query in RELEASE_ANNOTATIONS:
        line_filter = re.search(r'\|~ "([^"]+)"', query.text).group(1)
        (scope,) = re.findall(r'\| scope_name="([^"]+)"', query.text)
        for labels, metadata, line in records:
            assert re.search(line_filter, line) and metadata["scope_name"] == scope
            assert logql_fields(query.text) <= set(labels) | set(metadata) | LOKI_OTLP_METADATA
            assert metadata["actor"].string_value == "operator"
        assert records[1][1]["reason"].string_value == "annotation test"
