"""Tempo, Loki, Alertmanager and Prometheus configs: right for their pinned versions (what can be checked
without the binaries), and consistent with compose.yaml and with what the shop really emits."""

from __future__ import annotations

import subprocess

import pytest

from prom import binary
from shop import REPO
from stack import container_path, env_default, load, services


def _walk_keys(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _walk_keys(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from _walk_keys(item, path)


def _mounted(service, flag_prefix):
    """The repo file a service's `-config.file=` (or similar) flag points at."""
    args = services()[service]["command"]
    (path,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(flag_prefix)]
    source = container_path(service, path)
    assert source, f"{service} reads {path}, which no bind mount provides"
    return source


# ---- Tempo 3 ----


def test_compose_starts_tempo_on_the_repo_config():
    assert _mounted("tempo", "-config.file=") == "tempo/tempo.yaml"
    assert env_default(services()["tempo"]["image"]).startswith("grafana/tempo:3.")


def test_tempo_config_has_no_blocks_tempo_3_removed():
    config = load("tempo/tempo.yaml")
    removed = {"ingester", "ingester_client", "compactor", "metrics_generator_client", "query_frontend.search"}
    assert not removed & set(config)
    processors = config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert "local-blocks" not in processors and {"service-graphs", "span-metrics"} <= set(processors)
    # 3.0 refuses the flat (pre-2.x) overrides format: every override lives under `defaults`.
    assert set(config["overrides"]) == {"defaults"}


def test_tempo_receives_otlp_http_where_the_shop_sends_it_and_writes_metrics_to_prometheus():
    config = load("tempo/tempo.yaml")
    assert config["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    (remote_write,) = config["metrics_generator"]["storage"]["remote_write"]
    assert remote_write == {"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}
    assert "--web.enable-remote-write-receiver" in " ".join(services()["prometheus"]["command"])
    assert config["backend_worker"]["compaction"]["block_retention"]


def _tempo_paths(node, path=()):
    """Every directory Tempo's config names: keys `path`, `*_path` or `*_dir` (TLS files are not directories)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and (key == "path" or key.endswith(("_path", "_dir"))) and "tls" not in key:
                yield ".".join((*path, key)), value
            yield from _tempo_paths(value, (*path, key))


def test_everything_tempo_writes_is_inside_the_tempo_data_volume():
    # The directories Tempo 3.0.3's single binary writes (read off its /status/config with this file loaded):
    # each is named here, so none falls back to a default that a later release could move out of the volume.
    writers = {
        "storage.trace.wal.path",
        "storage.trace.local.path",
        "metrics_generator.storage.path",
        "live_store.wal.path",
        "live_store.shutdown_marker_dir",
        "backend_scheduler.local_work_path",
    }
    paths = dict(_tempo_paths(load("tempo/tempo.yaml")))
    assert writers <= set(paths)
    (volume,) = [v.split(":")[1] for v in services()["tempo"]["volumes"] if v.startswith("tempo-data:")]
    for key, path in paths.items():
        assert path.startswith(volume + "/"), f"{key}: {path} is outside the tempo-data volume ({volume})"


# ---- Loki 3.7 ----


def test_compose_starts_loki_on_the_repo_config():
    assert _mounted("loki", "-config.file=") == "loki/loki.yaml"


def test_loki_stores_otlp_logs_with_structured_metadata_and_retention():
    config = load("loki/loki.yaml")
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["index"]["period"]) == ("tsdb", "v13", "24h")
    assert config["limits_config"].get("allow_structured_metadata", True) is True
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True and compactor["delete_request_store"]
    assert config["limits_config"]["retention_period"]
    assert config["common"]["path_prefix"] == "/loki"
    assert config["auth_enabled"] is False  # one tenant, the "fake" one Grafana queries by default


def test_loki_config_has_no_keys_loki_3_removed():
    removed = {
        ("compactor", "shared_store"),
        ("limits_config", "enforce_metric_name"),
        ("table_manager",),
        ("chunk_store_config", "max_look_back_period"),
        ("storage_config", "boltdb_shipper", "shared_store"),
        ("ingester", "max_transfer_retries"),
    }
    assert not removed & set(_walk_keys(load("loki/loki.yaml")))


# ---- Alertmanager ----


@pytest.mark.integration
def test_alertmanager_config_passes_amtool_and_posts_to_the_lab_sink_and_the_responder():
    result = subprocess.run(
        [binary("amtool"), "check-config", str(REPO / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = load("alertmanager/alertmanager.yml")
    webhooks = {receiver["name"]: receiver["webhook_configs"] for receiver in config["receivers"]}
    assert set(webhooks) == {"alert-sink", "responder"} and config["route"]["receiver"] == "alert-sink"
    for name, (webhook,) in webhooks.items():
        # Both in compose, listening on 8080; both hear when an alert resolves (the responder closes incidents).
        assert webhook["url"] == f"http://{name}:8080/alerts" and name in services()
        assert webhook["send_resolved"] is True
    assert _mounted("alertmanager", "--config.file=") == "alertmanager/alertmanager.yml"


# ---- Prometheus ----


def test_prometheus_scrapes_every_lab_service_where_it_listens():
    config = load("prometheus/prometheus.yml")
    assert _mounted("prometheus", "--config.file=") == "prometheus/prometheus.yml"
    targets = {t for job in config["scrape_configs"] for g in job["static_configs"] for t in g["targets"]}
    expected = {
        "catalog:8080",
        "checkout:8080",
        "payment:8080",
        "auth:8080",
        "responder:8080",
        "tempo:3200",
        "loki:3100",
        "grafana:3000",
        "alertmanager:9093",
        "localhost:9090",
        "locust-master:8089",
    }
    assert targets == expected
    assert 8089 in [int(port.split(":")[-1]) for port in services()["locust-master"]["ports"]]
    (shop,) = [job for job in config["scrape_configs"] if job["job_name"] == "shop"]
    assert shop["scrape_interval"] == "5s"
    assert {g["labels"]["service"] for g in shop["static_configs"]} == {"catalog", "checkout", "payment", "auth"}
    (rules,) = config["rule_files"]
    assert container_path("prometheus", rules.rsplit("/", 1)[0]) == "prometheus/rules"


@pytest.mark.parametrize(
    "flag", ["--enable-feature=exemplar-storage", "--storage.tsdb.retention.time=", "--storage.tsdb.retention.size="]
)
def test_prometheus_keeps_exemplars_and_bounded_history(flag):
    assert any(arg.startswith(flag) for arg in services()["prometheus"]["command"])
