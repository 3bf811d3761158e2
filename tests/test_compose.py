"""compose.yaml: valid against the Compose Specification, and the lab's operating rules hold for every service."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.specifiers import SpecifierSet

import lab_secrets
from shop import REPO
from shoplib.services import DEFAULT_PORTS, RESPONDER
from stack import COMPOSE_PATH, ENV_REFERENCE, bind_mounts, compose, env_default, load, services

SHOP = ("catalog", "checkout", "payment", "auth")
# The responder runs on the shop's library and image, beside the shop. Named here until shoplib.services
# names it (RESPONDER and its port in DEFAULT_PORTS).

BUILT = (*SHOP, RESPONDER)  # from apps/Dockerfile
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


ONE_SHOT = "lab-init"  # writes the secrets, then exits


def test_the_whole_lab_is_there():
    assert set(BUILT) | set(BACKENDS) | {"alert-sink", "locust-master", "locust-worker", ONE_SHOT} == set(services())


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_every_service_is_pinned_healthchecked_restarted_and_bounded(name):
    service = services()[name]
    image = env_default(service["image"])
    if "build" not in service:
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*", image), f"{name}: {image} is not pinned to a release"
    assert "latest" not in image
    if name == ONE_SHOT:
        assert service["restart"] == "no" and "healthcheck" not in service
    else:
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["restart"] == "unless-stopped"
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert service["logging"]["options"]["max-size"]
    for dependency, condition in service.get("depends_on", {}).items():
        expected = "service_completed_successfully" if dependency == ONE_SHOT else "service_healthy"
        assert condition == {"condition": expected}


def test_memory_limits_of_what_keeps_running_add_up_to_at_most_3_gb():
    total = 0
    for name, service in services().items():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        total += 0 if name == ONE_SHOT else int(limit[:-1]) * MEMORY_UNITS[limit[-1]]
    assert total <= 3 * 2**30, f"{total / 2**30:.2f} GiB"


def test_config_bind_mounts_are_read_only_and_relabelled_for_selinux():
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert volume.endswith(":ro,z"), f"{name}: {volume}"


def test_go_services_collect_garbage_before_their_memory_limit():
    for name in ("tempo", "loki", "prometheus", "alertmanager"):
        service = services()[name]
        soft = service["environment"]["GOMEMLIMIT"]
        hard = service["deploy"]["resources"]["limits"]["memory"]
        assert soft.endswith("MiB") and int(soft[:-3]) <= 0.8 * int(hard[:-1]), f"{name}: {soft} of {hard}"


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
        **{name: "/data" for name in BUILT},
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


def test_a_fresh_clone_starts_without_env_and_every_secret_is_generated_or_given():
    """No variable is required (`:?`), no secret or admin password has a default: lab-init generates each one
    unless .env gives it, and each service reads its own through a *_FILE variable from the lab-secrets volume."""
    text = COMPOSE_PATH.read_text()
    assert ":?" not in text
    init = services()[ONE_SHOT]
    assert "lab-secrets:/run/lab-secrets" in init["volumes"]
    files = {}
    for secret in lab_secrets.SECRETS:
        assert init["environment"][secret.variable] == f"${{{secret.variable}:-}}"  # empty: generate one
        assert re.search(rf"^# {secret.variable}=$", (REPO / ".env.example").read_text(), flags=re.M), secret.variable
        files[f"/run/lab-secrets/{secret.name}"] = secret
    readers = {}
    for name, service in services().items():
        env = service.get("environment", {})
        if name == ONE_SHOT:
            continue
        for variable in ("JWT_SECRET", "DEMO_ADMIN_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD", "RESPONDER_TOKEN"):
            assert variable not in env, f"{name} sets {variable} itself"
        for variable, path in env.items():
            if variable.endswith("_FILE"):
                assert path in files, f"{name}: {variable}={path} is not a file lab-init writes"
                assert "lab-secrets:/run/lab-secrets:ro" in service["volumes"], name
                assert service["depends_on"][ONE_SHOT] == {"condition": "service_completed_successfully"}
                readers.setdefault(files[path].name, set()).add(name)
    assert readers == {
        "jwt_secret": {*BUILT},
        "shop_admin_password": {"auth"},
        "grafana_admin_password": {"grafana"},
        "responder_token": {RESPONDER},
    }
    # Alertmanager presents the responder's token from the same volume.
    (responder,) = [r for r in load("alertmanager/alertmanager.yml")["receivers"] if r["name"] == "responder"]
    credentials = responder["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"]
    assert credentials == "/run/lab-secrets/responder_token"
    assert "lab-secrets:/run/lab-secrets:ro" in services()["alertmanager"]["volumes"]
    grafana = services()["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer" and grafana["GF_SERVER_ENABLE_GZIP"] == "false"


def test_shop_services_build_from_the_one_dockerfile_and_export_straight_to_tempo_and_loki():
    dockerfile = (REPO / "apps" / "Dockerfile").read_text()
    (dockerfile_python,) = re.findall(r"ARG PYTHON_IMAGE=(\S+)", dockerfile)
    for name in BUILT:
        service = services()[name]
        assert service["build"]["context"] == "./apps" and service["build"]["args"]["SERVICE"] == name
        assert env_default(service["build"]["args"]["PYTHON_IMAGE"]) == dockerfile_python
        env = service["environment"]
        assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://tempo:4318/v1/traces"
        assert env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] == "http://loki:3100/otlp/v1/logs"
        assert env["SHOP_ENV"] == "prod"
    # The container runs a Python the project supports (requires-python, the versions the suite runs on).
    image_python = re.match(r"python:(\d+\.\d+\.\d+)-", dockerfile_python)
    assert image_python, f"{dockerfile_python} names no exact Python version"
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert image_python[1] in SpecifierSet(requires_python), f"{dockerfile_python} is outside {requires_python}"
    checkout = services()["checkout"]["environment"]
    assert {checkout[k] for k in ("AUTH_URL", "CATALOG_URL", "PAYMENT_URL")} == {
        "http://auth:8080",
        "http://catalog:8080",
        "http://payment:8080",
    }


def _first_party_imports(package):
    """The packages of apps/ that `package` needs, itself and those its modules import, transitively."""
    apps = REPO / "apps"
    first_party = {path.parent.name for path in apps.glob("*/*.py")}
    needed, todo = set(), [package]
    while todo:
        name = todo.pop()
        needed.add(name)
        for path in (apps / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                todo += [m.split(".")[0] for m in modules if m.split(".")[0] in first_party - needed - set(todo)]
    return needed


@pytest.mark.parametrize("name", [*SHOP, RESPONDER])
def test_the_image_holds_every_package_the_service_imports(name):
    copied = set(re.findall(r"^COPY (\S+)/ ", (REPO / "apps" / "Dockerfile").read_text(), flags=re.M))
    copied = {name if source == "${SERVICE}" else source for source in copied}
    assert _first_party_imports(name) <= copied


def test_the_responder_reaches_the_shop_and_the_backends_where_compose_runs_them():
    responder = services()[RESPONDER]
    env = responder["environment"]
    assert env_default(env["RESPONDER_MODE"]) == "auto"
    urls = {name.removesuffix("_URL").lower(): url for name, url in env.items() if name.endswith("_URL")}
    # Grafana's address only goes into links, which a browser on the host opens: the published one.
    assert urls.pop("grafana") == "http://localhost:3000"
    assert set(urls) == {*SHOP, "prometheus", "tempo", "loki"}
    for name, url in urls.items():
        assert url == f"http://{name}:{_container_port(name)}", f"{name}: {url}"
    # It starts once what it reads and acts on is healthy; Alertmanager, which calls it, retries until it is up.
    assert {*SHOP, "prometheus", "tempo", "loki"} <= set(responder["depends_on"])


def _container_port(name):
    """The port a service listens on inside its container: the published one's target, else its healthcheck's."""
    for port in services()[name].get("ports", []):
        return int(port.split(":")[-1])
    probe = " ".join(services()[name]["healthcheck"]["test"])
    return int(re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/", probe).group(1))


def test_alertmanager_webhooks_name_compose_services_on_their_ports():
    config = load("alertmanager/alertmanager.yml")
    hooks = {r["name"]: [hook["url"] for hook in r["webhook_configs"]] for r in config["receivers"]}
    assert hooks == {"alert-sink": ["http://alert-sink:8080/alerts"], "responder": ["http://responder:8080/alerts"]}
    for (url,) in hooks.values():
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)/alerts", url).groups()
        assert int(port) == _container_port(host)


def test_no_service_waits_for_itself_through_its_dependencies():
    # Compose refuses a cycle only at `up`; Alertmanager posts to the responder but must not wait for it.
    def waits_for(name, seen=()):
        for dependency in services()[name].get("depends_on", {}):
            assert dependency not in (*seen, name), f"{' -> '.join((*seen, name, dependency))}"
            waits_for(dependency, (*seen, name))

    for name in services():
        waits_for(name)
