"""compose.yaml: valid against the Compose Specification, and the lab's operating rules hold for every service."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from shop import REPO
from shoplib.services import DEFAULT_PORTS
from stack import COMPOSE_PATH, ENV_REFERENCE, bind_mounts, compose, env_default, services

SHOP = ("catalog", "checkout", "payment", "auth")
BACKENDS = ("tempo", "loki", "prometheus", "alertmanager", "grafana")
MEMORY_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


@pytest.mark.integration
def test_compose_file_matches_the_compose_specification():
    # check-jsonschema ships the Compose Specification's own JSON schema (vendor.compose-spec).
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_PATH)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_lab_is_there():
    assert set(SHOP) | set(BACKENDS) | {"alert-sink", "locust-master", "locust-worker"} == set(services())


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_every_service_is_pinned_healthchecked_restarted_and_bounded(name):
    service = services()[name]
    image = env_default(service["image"])
    if "build" not in service:
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*", image), f"{name}: {image} is not pinned to a release"
    assert "latest" not in image
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["restart"] == "unless-stopped"
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert service["logging"]["options"]["max-size"]
    for dependency in service.get("depends_on", {}).values():
        assert dependency == {"condition": "service_healthy"}


def test_memory_limits_add_up_to_at_most_3_gb():
    total = 0
    for service in services().values():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        total += int(limit[:-1]) * MEMORY_UNITS[limit[-1]]
    assert total <= 3 * 2**30, f"{total / 2**30:.2f} GiB"


def test_published_ports_listen_on_loopback_only():
    published = {}
    for name, service in services().items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name} publishes {port}"
            published[name] = (int(host_port), int(container_port))
    assert published == {
        # The shop is published where it listens natively, so the same URLs reach either.
        **{service: (port, 8080) for service, port in DEFAULT_PORTS.items()},
        "grafana": (3000, 3000),
        "prometheus": (9090, 9090),
        "alertmanager": (9093, 9093),
        "tempo": (3200, 3200),
        "loki": (3100, 3100),
        "locust-master": (8089, 8089),
    }


def test_every_mounted_file_exists():
    for name, source, _target in bind_mounts():
        assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_every_store_keeps_its_data_in_a_named_volume():
    stores = {
        "tempo": "/var/tempo",
        "loki": "/loki",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "grafana": "/var/lib/grafana",
        **{name: "/data" for name in SHOP},
    }
    for name, path in stores.items():
        named = [v for v in services()[name]["volumes"] if not v.startswith("./") and v.split(":")[1] == path]
        assert named and named[0].split(":")[0] in compose()["volumes"], f"{name}: {path} is not a named volume"


def test_every_variable_has_a_default_or_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*(\w+)=", (REPO / ".env.example").read_text(), flags=re.M))
    for name, operator, _default in ENV_REFERENCE.findall(COMPOSE_PATH.read_text()):
        if operator in (":-", "-"):
            continue
        assert name in documented, f"${{{name}}} has no default and is not in .env.example"


def test_secrets_have_no_default_anywhere():
    text = COMPOSE_PATH.read_text()
    for secret in ("JWT_SECRET", "GF_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?[^}}]+\}}", text), f"{secret} must be required (:?), not defaulted"
        assert re.search(rf"^{secret}=$", (REPO / ".env.example").read_text(), flags=re.M)
    grafana = services()["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GF_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_shop_services_build_from_the_one_dockerfile_and_export_straight_to_tempo_and_loki():
    dockerfile = (REPO / "apps" / "Dockerfile").read_text()
    (dockerfile_python,) = re.findall(r"ARG PYTHON_IMAGE=(\S+)", dockerfile)
    for name in SHOP:
        service = services()[name]
        assert service["build"]["context"] == "./apps" and service["build"]["args"]["SERVICE"] == name
        assert env_default(service["build"]["args"]["PYTHON_IMAGE"]) == dockerfile_python
        env = service["environment"]
        assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://tempo:4318/v1/traces"
        assert env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] == "http://loki:3100/otlp/v1/logs"
        assert env["SHOP_ENV"] == "prod"
    # The container runs the Python minor version the tests run on.
    assert re.match(rf"python:{sys.version_info.major}\.{sys.version_info.minor}\.\d+-", dockerfile_python)
    checkout = services()["checkout"]["environment"]
    assert {checkout[k] for k in ("AUTH_URL", "CATALOG_URL", "PAYMENT_URL")} == {
        "http://auth:8080",
        "http://catalog:8080",
        "http://payment:8080",
    }
