"""Grafana provisioning: fixed uids, every uid referenced exists, `$` escaped, links point where data lives."""

from __future__ import annotations

import re

from shop import REPO
from stack import DATASOURCES_FILE, container_path, datasources, load, services


def _referenced_uids(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasourceUid":
                yield value
            else:
                yield from _referenced_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from _referenced_uids(item)


def test_the_four_datasources_have_fixed_uids():
    assert set(datasources()) == {"prometheus", "loki", "tempo", "alertmanager"}
    assert {uid: ds["type"] for uid, ds in datasources().items()} == {
        "prometheus": "prometheus",
        "loki": "loki",
        "tempo": "tempo",
        "alertmanager": "alertmanager",
    }


def test_every_referenced_uid_is_provisioned():
    referenced = set(_referenced_uids(load(DATASOURCES_FILE)))
    assert referenced and referenced <= set(datasources())


def test_datasource_urls_name_compose_services_on_their_ports():
    for ds in datasources().values():
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", ds["url"]).groups()
        assert host in services(), f"{ds['name']} points at {host}, which compose does not run"
        assert any(p.endswith(f":{port}") for p in services()[host]["ports"])


def test_dollar_signs_are_escaped_for_grafanas_env_expansion():
    # Grafana expands $VAR and ${VAR} in provisioning files; a literal $ must be written $$.
    for path in (REPO / "grafana" / "provisioning").rglob("*.yaml"):
        text = re.sub(r"^\s*#.*$", "", path.read_text(), flags=re.M)
        assert not re.findall(r"(?<!\$)\$(?!\$)", text.replace("$$", "")), f"unescaped $ in {path}"


def test_correlations_link_the_three_signals():
    ds = datasources()
    exemplar_labels = {
        d["name"]: d["datasourceUid"] for d in ds["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    }
    # The services label exemplars trace_id (shoplib.metrics.trace_exemplar); Tempo's generator uses traceID.
    assert exemplar_labels == {"trace_id": "tempo", "traceID": "tempo"}
    assert "trace_id" in (REPO / "apps" / "shoplib" / "metrics.py").read_text()

    (derived,) = ds["loki"]["jsonData"]["derivedFields"]
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"  # structured metadata
    assert derived["datasourceUid"] == "tempo" and derived["url"] == "$${__value.raw}"

    tempo = ds["tempo"]["jsonData"]
    to_logs = tempo["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    # Loki's OTLP ingestion turns service.name into the service_name label; the query filters by trace too.
    assert to_logs["tags"] == [{"key": "service.name", "value": "service_name"}]
    assert 'trace_id="$${__span.traceId}"' in to_logs["query"]
    to_metrics = tempo["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == "prometheus"
    assert to_metrics["tags"] == [{"key": "service.name", "value": "service"}]
    assert all("http_request_duration_seconds" in q["query"] for q in to_metrics["queries"])
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus" and tempo["nodeGraph"]["enabled"] is True


def test_dashboards_provider_reads_the_mounted_dashboards_folder():
    (provider,) = load("grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    assert provider["folder"] == "Shop"
    assert container_path("grafana", provider["options"]["path"]) == "grafana/dashboards"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / container_path("grafana", home)).is_file()


def test_anonymous_visitors_can_view_but_not_edit():
    env = services()["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert all(ds.get("editable") is False for ds in datasources().values())
