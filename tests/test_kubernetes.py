"""deploy/kubernetes: both overlays render (kubectl kustomize), every object validates against the Kubernetes schemas,
and the lab's rules hold: probes, requests and limits, pinned images, secrets only from Secret objects, autoscaling
and disruption budgets that fit the storage, and NetworkPolicies that allow exactly the calls the lab makes. The
calls are derived from the services' settings, the env the manifests set, the collector, Alertmanager, Grafana and
Tempo configs and Prometheus's scrape configuration applied to the pods' annotations: a new call without a policy
fails, and so does a policy that allows a call nobody makes. The collector configs are checked as the collector
would read them (components, pipelines, tail-sampling policies), the lab's own config files as the pods see them
(generated from the files themselves, never copied), and the Helm values against the lab's pins."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from shop import REPO
from shoplib.services import RESPONDER, SERVICES
from stack import bind_mounts, env_default, load, services

K8S = REPO / "deploy" / "kubernetes"
# lab-init/ is on pytest's path (pyproject.toml), not on mypy's: the secrets the lab generates, by name.
lab_secrets = importlib.import_module("lab_secrets")
OVERLAYS = ("dev", "prod")
# The schemas every rendered object must satisfy (kubernetes-validate ships them; strict: no unknown fields).
KUBERNETES_VERSION = "1.32"
NAMESPACE = "shoplab"
SHOP = (*SERVICES, RESPONDER)
# Workloads whose data is a SQLite file on a volume of their own (one PersistentVolumeClaim per replica).
SQLITE_STATEFULSETS = {"catalog", "checkout", "payment", "responder"}
# The lab's own files the cluster mounts where compose does, unchanged: ConfigMaps generated over the files themselves
# (tempo/, loki/ and alertmanager/kustomization.yaml), so there is no copy to keep in step. Tempo's and Loki's run in
# dev only (prod's come from the Helm charts).
LAB_FILES = {"tempo/tempo.yaml", "loki/loki.yaml", "alertmanager/alertmanager.yml", "alertmanager/webhook_sink.py"}
DEV_ONLY_LAB_FILES = {"tempo/tempo.yaml", "loki/loki.yaml"}
# Every collector component the configs use, each in otelcol-contrib 0.159.0 under this name
# (open-telemetry/opentelemetry-collector-releases, distributions/otelcol-contrib/manifest.yaml; the otlp exporters'
# metadata.yaml in open-telemetry/opentelemetry-collector v0.159.0). `otlp` and `otlphttp` as exporter names are the
# deprecated aliases of otlp_grpc and otlp_http.
COLLECTOR_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch", "tail_sampling"},
    "exporters": {"loadbalancing", "otlp_grpc", "otlp_http"},
    "extensions": {"health_check"},
}
TAIL_SAMPLING_POLICY_TYPES = {"status_code", "latency", "probabilistic"}
SPAN_STATUS_CODES = {"OK", "ERROR", "UNSET"}
Rendered = dict[str, list[dict[str, Any]]]  # overlay: its objects


# --- rendering ------------------------------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """kubectl's embedded kustomize (KUBECTL names another binary). Missing, the tests skip, or fail in CI."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl is not installed (apt-get install kubernetes-client): it renders deploy/kubernetes"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return [kubectl, "kustomize"]


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    """Every overlay as kubectl renders it, once per module."""
    documents = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [*kustomize_command(), str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        documents[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return documents


@dataclass
class Render:
    """One overlay's objects, with the look-ups the checks need."""

    documents: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] in kinds]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        return found

    def workloads(self) -> dict[str, dict[str, Any]]:
        return {doc["metadata"]["name"]: doc for doc in self.of_kind("Deployment", "StatefulSet", "DaemonSet")}

    def generated(self, name: str) -> dict[str, Any]:
        """A ConfigMap by its generator name (the render appends a hash of its contents)."""
        (found,) = [
            doc
            for doc in self.of_kind("ConfigMap")
            if re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", doc["metadata"]["name"])
        ]
        return found

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        """A container's environment as the kubelet builds it: envFrom, then env, ConfigMap references resolved,
        $(VAR) expanded. Downward-API fields read as <fieldPath>."""
        configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in self.of_kind("ConfigMap")}
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(configmaps[source["configMapRef"]["name"]])
        for variable in container.get("env", []):
            if "value" in variable:
                value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), variable["value"])
            elif "configMapKeyRef" in variable["valueFrom"]:
                ref = variable["valueFrom"]["configMapKeyRef"]
                value = configmaps[ref["name"]][ref["key"]]
            else:
                value = f"<{variable['valueFrom']['fieldRef']['fieldPath']}>"
            env[variable["name"]] = value
        return env


def renders(rendered: Rendered, overlay: str) -> Render:
    return Render(rendered[overlay])


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == workload["metadata"]["name"]]
    found: dict[str, Any] = container
    return found


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kustomization(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml_file(K8S / relative / "kustomization.yaml")
    return loaded


# --- rendering and schemas ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_the_whole_lab(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    backends = {"tempo", "loki"} if overlay == "dev" else set()  # prod's come from the Helm charts
    expected = {*SHOP, "otel-agent", "otel-gateway", "prometheus", "alertmanager", "alert-sink", "grafana", *backends}
    assert set(render.workloads()) == expected
    assert {doc["metadata"].get("namespace", NAMESPACE) for doc in render.documents} == {NAMESPACE}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered: Rendered, overlay: str) -> None:
    # No custom resources: everything has a schema (scraping is by annotation, not a ServiceMonitor).
    failures = []
    for doc in renders(rendered, overlay).documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert failures == []


def test_the_schema_check_rejects_what_the_api_server_would() -> None:
    # The validator is strict: an unknown field and a wrongly typed one are both refused.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}
    kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
    for bad in ({"port": 80, "targetport": 8080}, {"port": "eighty"}):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate({**service, "spec": {"ports": [bad]}}, KUBERNETES_VERSION, strict=True)


# --- the shop's workloads -------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shop_is_probed_on_readyz_and_healthz(rendered: Rendered, overlay: str) -> None:
    workloads = renders(rendered, overlay).workloads()
    for name in SHOP:
        container = main_container(workloads[name])
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert (get["path"], ports.get(get["port"], get["port"])) == (path, 8080), f"{name} {probe}"
    for name, workload in workloads.items():
        for container in pod_spec(workload)["containers"]:
            assert {"readinessProbe", "livenessProbe"} <= set(container), name


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in base units (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


def compose_memory_limit(name: str) -> float:
    limit: str = services()[name]["deploy"]["resources"]["limits"]["memory"]
    return float(limit[:-1]) * {"K": 2**10, "M": 2**20, "G": 2**30}[limit[-1]]  # Docker's M is MiB


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits_and_composes_memory_limit(rendered: Rendered, overlay: str) -> None:
    for name, workload in renders(rendered, overlay).workloads().items():
        for container in containers(workload):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), f"{name}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources["limits"]), f"{name}/{container['name']}"
            for kind in ("cpu", "memory"):
                assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), name
        if name in services():
            # The limits the lab measured its processes against (README, "Memory and stop times").
            limit = quantity(main_container(workload)["resources"]["limits"]["memory"])
            assert limit == compose_memory_limit(name), name


def project_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_and_matches_the_lab(rendered: Rendered, overlay: str) -> None:
    for name, workload in renders(rendered, overlay).workloads().items():
        for container in containers(workload):
            repository, _, tag = container["image"].rpartition(":")
            # A full version, with the variant compose pins where it has one (python:3.11.16-slim-bookworm).
            pinned = re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag)
            assert repository and pinned, f"{name}: {container['image']} is not pinned"
            if name in SHOP:
                # apps/Dockerfile's image, which compose tags shoplab/<service>:dev, at the project's version.
                assert (repository, tag) == (services()[name]["image"].rpartition(":")[0], project_version())
            elif name in services():
                assert container["image"] == env_default(services()[name]["image"]), name


# --- secrets --------------------------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"secret|passw|token|credential|api_?key|access_?key", re.IGNORECASE)


def secret_volumes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume["secret"] for volume in pod_spec(workload).get("volumes", []) if "secret" in volume}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_the_out_of_band_secret(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    # No Secret object in the manifests: shoplab-secrets is created out of band (README, "Secrets").
    assert render.of_kind("Secret") == []
    for doc in render.of_kind("ConfigMap"):
        for key, value in doc.get("data", {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                pytest.fail(f"ConfigMap {doc['metadata']['name']} carries {key}={value!r}")
    for name, workload in render.workloads().items():
        volumes = secret_volumes(workload)
        for volume in volumes.values():
            assert volume["secretName"] == "shoplab-secrets"
            assert {item["key"] for item in volume["items"]} <= set(lab_secrets.BY_NAME), name
        for container in containers(workload):
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]) and not variable["name"].endswith("_FILE"):
                    pytest.fail(f"{name} sets {variable['name']} in its manifest")
                assert "secretKeyRef" not in variable.get("valueFrom", {}), f"{name}: secrets come as files"
            # Every *_FILE a container reads is a key of a secret volume mounted where the variable says.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            for variable, path in render.env(container).items():
                if variable.endswith("_FILE"):
                    directory, _, filename = path.rpartition("/")
                    volume = volumes[mounts[directory]]
                    assert filename in {item["path"] for item in volume["items"]}, f"{name}: {variable}"


def test_helm_values_carry_no_credentials() -> None:
    def walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        else:
            yield path, node

    for values in sorted((K8S / "helm").glob("*.yaml")):
        for path, value in walk(yaml_file(values), values.name):
            if SECRET_NAME.search(path.rpartition(".")[2]):
                assert value in (None, "", False), f"{path} has a value: credentials come from Secrets"


# --- the shop's telemetry path --------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shop_exports_to_the_node_agent_with_composes_otel_variables(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    agent = render.named("Service", "otel-agent")
    assert agent["spec"]["internalTrafficPolicy"] == "Local"  # the agent on the pod's own node
    for name in SHOP:
        env = render.env(main_container(render.workloads()[name]))
        ours = {key: value for key, value in env.items() if key.startswith("OTEL_")}
        theirs = {key: value for key, value in services()[name]["environment"].items() if key.startswith("OTEL_")}
        # One more than compose: the pod, namespace and node, so a span says where it ran.
        assert set(ours) == {*theirs, "OTEL_RESOURCE_ATTRIBUTES"}, name
        assert ours.pop("OTEL_RESOURCE_ATTRIBUTES").startswith("k8s.pod.name=<metadata.name>,")
        for key, value in ours.items():
            if key.endswith("_ENDPOINT"):
                parts = urlsplit(value)
                # The collector's OTLP/HTTP receiver serves the standard paths (compose's Loki has an /otlp prefix).
                signal = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "traces", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "logs"}[
                    key
                ]
                assert urlsplit(theirs[key]).path.endswith(f"/v1/{signal}")
                assert (parts.hostname, parts.port, parts.path) == ("otel-agent", 4318, f"/v1/{signal}")
            else:
                assert value == theirs[key], key


def collector_config(role: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml_file(K8S / "base" / "collector" / f"{role}-config.yaml")
    return loaded


def collector_manifest(role: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((K8S / "base" / "collector" / f"otel-{role}.yaml").read_text()))


@pytest.mark.parametrize("role", ["agent", "gateway"])
def test_collector_pipelines_use_only_defined_and_known_components(role: str) -> None:
    config = collector_config(role)
    for section, known in COLLECTOR_COMPONENTS.items():
        for name in config.get(section, {}):
            assert name.split("/")[0] in known, f"{role}: {section} {name}"
    assert set(config["service"]["extensions"]) == set(config["extensions"])
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline, spec in config["service"]["pipelines"].items():
        assert pipeline.split("/")[0] in ("traces", "logs"), pipeline
        for section in used:
            assert set(spec[section]) <= set(config[section]), f"{role} {pipeline}: {section}"
            used[section] |= set(spec[section])
        # The memory limiter refuses data before anything else holds it; batching is the last step before export.
        assert spec["processors"][0] == "memory_limiter" and spec["processors"][-1] == "batch", pipeline
    for section, names in used.items():
        assert names == set(config[section]), f"{role}: {section} defined but unused"


@pytest.mark.parametrize("role", ["agent", "gateway"])
def test_every_environment_variable_a_collector_config_reads_is_set(role: str) -> None:
    (deployment,) = [doc for doc in collector_manifest(role) if doc["kind"] in ("Deployment", "DaemonSet")]
    env = {variable["name"] for variable in main_container(deployment)["env"]}
    assert set(re.findall(r"\$\{env:(\w+)\}", (K8S / "base" / "collector" / f"{role}-config.yaml").read_text())) <= env


def slo_latency_threshold_ms() -> float:
    """The checkout SLO's "slow" (prometheus/rules/slo.rules.yml): its bucket bound, in milliseconds."""
    (bound,) = set(re.findall(r'le="([0-9.]+)"', (REPO / "prometheus" / "rules" / "slo.rules.yml").read_text()))
    return float(bound) * 1000


def test_the_gateway_keeps_every_error_every_slow_trace_and_a_share_of_the_rest() -> None:
    config = collector_config("gateway")
    pipelines = config["service"]["pipelines"]
    assert "tail_sampling" in pipelines["traces"]["processors"]
    assert all("tail_sampling" not in spec["processors"] for name, spec in pipelines.items() if name != "traces")
    sampling = config["processors"]["tail_sampling"]
    assert re.fullmatch(r"\d+s", sampling["decision_wait"]) and sampling["num_traces"] > 0
    policies = {}
    for policy in sampling["policies"]:
        # A policy is its name, its type and that type's settings, nothing else (any other key is ignored silently).
        assert policy["type"] in TAIL_SAMPLING_POLICY_TYPES and set(policy) == {"name", "type", policy["type"]}
        policies[policy["type"]] = policy[policy["type"]]
    assert set(policies) == TAIL_SAMPLING_POLICY_TYPES
    assert "ERROR" in policies["status_code"]["status_codes"]
    assert set(policies["status_code"]["status_codes"]) <= SPAN_STATUS_CODES
    assert policies["latency"] == {"threshold_ms": slo_latency_threshold_ms()}
    # The share is configurable per overlay (the `backends` ConfigMap), a number of percent.
    reference = re.fullmatch(r"\$\{env:(\w+)\}", str(policies["probabilistic"]["sampling_percentage"]))
    assert reference, "the share comes from the environment"
    variable = reference[1]
    shares = {overlay: sample_percent(overlay, variable) for overlay in OVERLAYS}
    assert all(0 <= share <= 100 for share in shares.values())
    assert shares["prod"] < 100, "prod keeps only a share of the ordinary traces"


def sample_percent(overlay: str, variable: str) -> float:
    """`variable` as the overlay's `backends` ConfigMap sets it (the overlay's literal wins over the base's)."""
    values: dict[str, str] = {}
    for layer in ("base", f"overlays/{overlay}"):
        for generator in kustomization(layer).get("configMapGenerator", []):
            if generator["name"] == "backends":
                values.update(literal.split("=", 1) for literal in generator["literals"])
    return float(values[variable])


def test_agents_send_each_trace_whole_to_one_gateway_replica() -> None:
    config = collector_config("agent")
    # Tail sampling decides per trace: every span of a trace must reach the same gateway replica.
    (exporter,) = config["service"]["pipelines"]["traces"]["exporters"]
    assert exporter == "loadbalancing"
    balancing = config["exporters"]["loadbalancing"]
    assert balancing["routing_key"] == "traceID"
    assert set(balancing["protocol"]) == {"otlp"} and "endpoint" not in balancing["protocol"]["otlp"]
    (resolver,) = balancing["resolver"].values()
    # The resolver sees every replica: a headless Service of the gateway, on its OTLP port.
    headless = {doc["metadata"]["name"]: doc for doc in collector_manifest("gateway") if doc["kind"] == "Service"}[
        resolver["hostname"]
    ]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {"app.kubernetes.io/name": "otel-gateway"}
    assert int(resolver["port"]) in {port["port"] for port in headless["spec"]["ports"]}
    receiver = collector_config("gateway")["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert int(resolver["port"]) == int(receiver.rpartition(":")[2])


# --- scaling, disruption, spreading ---------------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) applied to a set of labels; {} selects all."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_never_scales_out_a_per_replica_sqlite_file(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    workloads = render.workloads()
    autoscalers = {hpa["spec"]["scaleTargetRef"]["name"]: hpa for hpa in render.of_kind("HorizontalPodAutoscaler")}
    assert {"catalog", "checkout"} <= set(autoscalers)
    for name, hpa in autoscalers.items():
        target = workloads[name]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == target["kind"]
        if target["spec"].get("volumeClaimTemplates"):
            # A second replica would get a second, empty database (README, "Storage").
            assert hpa["spec"]["maxReplicas"] == 1, name
    for name in SQLITE_STATEFULSETS:
        assert workloads[name]["kind"] == "StatefulSet" and workloads[name]["spec"]["replicas"] == 1, name
        (claim,) = workloads[name]["spec"]["volumeClaimTemplates"]
        mounts = {mount["name"]: mount["mountPath"] for mount in main_container(workloads[name])["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == render.env(main_container(workloads[name])).get("DATA_DIR", "/data")


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_one_disruption_budget_that_lets_a_drain_finish(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    budgets = render.of_kind("PodDisruptionBudget")
    for name, workload in render.workloads().items():
        if workload["kind"] == "DaemonSet":
            continue  # a drain does not evict DaemonSet pods
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(workload))]
        replicas = workload["spec"].get("replicas", 1)
        # A budget that can never be met (minAvailable: 1 of one replica) would hold a node drain for ever.
        assert budget["spec"].get("maxUnavailable", 0) >= 1 or budget["spec"]["minAvailable"] < replicas, name


@pytest.mark.integration
def test_dev_runs_one_of_everything_and_prod_spreads_its_replicas(rendered: Rendered) -> None:
    assert {w["spec"].get("replicas", 1) for w in renders(rendered, "dev").workloads().values()} == {1}
    replicated = set()
    for name, workload in renders(rendered, "prod").workloads().items():
        if workload["spec"].get("replicas", 1) > 1:
            replicated.add(name)
            (term,) = pod_spec(workload)["affinity"]["podAntiAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert term["topologyKey"] == "kubernetes.io/hostname"
            assert selects(term["labelSelector"], pod_labels(workload)), name
    assert replicated == {"auth", "otel-gateway", "prometheus", "alertmanager"}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_the_restricted_pod_security_standard(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    namespace = render.named("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, workload in render.workloads().items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), name
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), name
        # Only Prometheus talks to the Kubernetes API (pod discovery).
        assert spec["automountServiceAccountToken"] is (name == "prometheus"), name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}, name
            assert all("hostPort" not in port for port in container.get("ports", [])), name


# --- configs kept in step with the lab's own ------------------------------------------------------------------------


def test_the_generators_carry_every_dashboard_and_rule_file() -> None:
    grafana = yaml_file(REPO / "grafana" / "kustomization.yaml")["configMapGenerator"]
    files = {path for generator in grafana for path in generator["files"]}
    assert {f"dashboards/{p.name}" for p in (REPO / "grafana" / "dashboards").glob("*.json")} <= files
    prometheus = yaml_file(REPO / "prometheus" / "kustomization.yaml")["configMapGenerator"]
    files = {path for generator in prometheus for path in generator["files"]}
    assert files == {f"rules/{p.name}" for p in (REPO / "prometheus" / "rules").glob("*.rules.yml")}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alertmanager_reaches_the_labs_receivers_by_their_compose_names(rendered: Rendered, overlay: str) -> None:
    # The lab's alertmanager.yml unchanged (the test below): its receivers' hosts are Services here too, the sink runs
    # as compose runs it, and the responder's token is mounted where the config reads it.
    render = renders(rendered, overlay)
    config = yaml.safe_load(render.generated("alertmanager-config")["data"]["alertmanager.yml"])
    ports = {doc["metadata"]["name"]: {p["port"] for p in doc["spec"]["ports"]} for doc in render.of_kind("Service")}
    workload = render.workloads()["alertmanager"]
    mounts = {mount["mountPath"]: mount["name"] for mount in main_container(workload)["volumeMounts"]}
    hosts = set()
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            url = urlsplit(webhook["url"])
            assert url.port in ports.get(str(url.hostname), set()), f"{url.hostname}:{url.port} is no Service here"
            hosts.add(url.hostname)
            token = webhook.get("http_config", {}).get("authorization", {}).get("credentials_file")
            if token:
                directory, _, filename = token.rpartition("/")
                volume = secret_volumes(workload)[mounts[directory]]
                assert filename in {item["path"] for item in volume["items"]}, token
    assert hosts == {"alert-sink", "responder"}
    sink = main_container(render.workloads()["alert-sink"])
    assert sink["command"] == services()["alert-sink"]["command"]


def test_grafana_datasources_are_the_labs_but_for_tempo_and_lokis_addresses() -> None:
    lab = load("grafana/provisioning/datasources/datasources.yaml")
    ours = yaml_file(K8S / "base" / "grafana" / "datasources.yaml")
    assert [ds["url"] for ds in ours["datasources"] if ds["uid"] in ("tempo", "loki")] == [
        "${LOKI_QUERY_URL}",
        "${TEMPO_QUERY_URL}",
    ]
    for datasources in (lab, ours):
        for ds in datasources["datasources"]:
            if ds["uid"] in ("tempo", "loki"):
                ds.pop("url")
    assert ours == lab


def mounted_file(render: Render, name: str, path: str) -> str:
    """What the workload's main container reads at `path`, from the ConfigMap volume mounted over it."""
    workload = render.workloads()[name]
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    for mount in main_container(workload).get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/")
        if "subPath" in mount and path == directory:
            key = mount["subPath"]
        elif "subPath" not in mount and path.startswith(f"{directory}/"):
            key = path[len(directory) + 1 :]
        else:
            continue
        source = volumes[mount["name"]]["configMap"]
        if "items" in source:  # only the listed keys, under their paths
            (key,) = [item["key"] for item in source["items"] if item["path"] == key]
        data: str = render.named("ConfigMap", source["name"])["data"][key]
        return data
    pytest.fail(f"{name} mounts nothing at {path}")


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_reads_the_labs_own_files_where_compose_mounts_them(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    checked = set()
    for service, source, target in bind_mounts():
        lab_file = source.removeprefix("./")
        if lab_file not in LAB_FILES or service not in render.workloads():
            continue
        container = main_container(render.workloads()[service])
        # The process is told to read it there, as in compose (its command or arguments name the path).
        assert target in " ".join(container.get("command", []) + container.get("args", [])), service
        # Byte for byte: the ConfigMap is generated over the lab's file, not a copy of it.
        assert mounted_file(render, service, target) == (REPO / lab_file).read_bytes().decode(), lab_file
        checked.add(lab_file)
    assert checked == (LAB_FILES if overlay == "dev" else LAB_FILES - DEV_ONLY_LAB_FILES)


@pytest.mark.integration
def test_dev_backends_keep_their_data_on_local_storage(rendered: Rendered) -> None:
    # No object store in dev: the lab's configs use Tempo's local backend and Loki's filesystem, under the paths the
    # StatefulSets' volumes are mounted on.
    render = renders(rendered, "dev")
    tempo = yaml.safe_load(render.generated("tempo-config")["data"]["tempo.yaml"])
    loki = yaml.safe_load(render.generated("loki-config")["data"]["loki.yaml"])
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert {period["object_store"] for period in loki["schema_config"]["configs"]} == {"filesystem"}
    for name, paths in (
        ("tempo", [tempo["storage"]["trace"]["wal"]["path"], tempo["storage"]["trace"]["local"]["path"]]),
        ("loki", [loki["common"]["path_prefix"], loki["compactor"]["working_directory"]]),
    ):
        workload = render.workloads()[name]
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        mounts = {mount["name"]: mount["mountPath"] for mount in main_container(workload)["volumeMounts"]}
        volume = mounts[claim["metadata"]["name"]].rstrip("/")
        for path in paths:
            assert path == volume or path.startswith(f"{volume}/"), f"{name} writes {path} outside its volume"


def test_no_lab_file_is_copied_into_the_manifests() -> None:
    # The lab's files reach the cluster through generators over the files themselves; a copy under deploy/kubernetes
    # (whole, or inside another file) would drift from them unnoticed.
    lab = [
        *LAB_FILES,
        *(f"grafana/dashboards/{p.name}" for p in (REPO / "grafana" / "dashboards").glob("*.json")),
        *(f"prometheus/rules/{p.name}" for p in (REPO / "prometheus" / "rules").glob("*.rules.yml")),
    ]
    bodies = {name: (REPO / name).read_text().strip() for name in lab}
    for path in sorted(p for p in K8S.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json", ".py")):
        text = path.read_text()
        copied = [name for name, body in bodies.items() if body in text]
        assert copied == [], f"{path.relative_to(REPO)} copies {copied}"


def test_the_values_check_names_keys_a_chart_does_not_have() -> None:
    spec = importlib.util.spec_from_file_location("check_values", K8S / "helm" / "check_values.py")
    assert spec and spec.loader
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    defaults = {"write": {"replicas": 3, "persistence": {"size": "10Gi"}}, "loki": {"limits_config": {}}}
    values = {"write": {"replica": 3, "persistence": {"size": "1Gi"}}, "loki": {"limits_config": {"any": 1}}}
    assert check.unknown_keys(values, defaults, set()) == ["write.replica"]
    assert check.unknown_keys({"x": {"y": 1}}, {"x": {"z": 1}}, {"x"}) == []


# --- Helm values ----------------------------------------------------------------------------------------------------


def charts() -> dict[str, dict[str, Any]]:
    return {chart["release"]: chart for chart in yaml_file(K8S / "helm" / "charts.yaml")["charts"]}


def helm_values(release: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml_file(K8S / "helm" / charts()[release]["values"])
    return values


@pytest.mark.parametrize("release", ["tempo", "loki"])
def test_helm_charts_are_pinned_to_the_labs_tempo_and_loki(release: str) -> None:
    chart = charts()[release]
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    lab_version = env_default(services()[release]["image"]).rpartition(":")[2]
    assert chart["appVersion"] == lab_version
    image = helm_values(release)["tempo" if release == "tempo" else "loki"]["image"]
    assert image["tag"] == lab_version


def test_prod_backends_keep_data_in_object_storage_with_stated_retention() -> None:
    loki, tempo = helm_values("loki"), helm_values("tempo")
    assert loki["deploymentMode"] == "SimpleScalable" and loki["loki"]["storage"]["type"] == "s3"
    assert {period["object_store"] for period in loki["loki"]["schemaConfig"]["configs"]} == {"s3"}
    assert loki["loki"]["compactor"]["retention_enabled"] is True
    assert loki["loki"]["limits_config"]["retention_period"] == loki["loki"]["limits_config"]["max_query_lookback"]
    assert loki["write"]["replicas"] >= loki["loki"]["commonConfig"]["replication_factor"]
    assert loki["minio"]["enabled"] is False
    assert tempo["storage"]["trace"]["backend"] == "s3"
    assert tempo["ingest"]["kafka"]["address"]
    partitions = tempo["ingest"]["kafka"]["auto_create_topic_default_partitions"]
    assert tempo["liveStore"]["replicas"] == tempo["blockBuilder"]["replicas"] == partitions
    retention = tempo["backendScheduler"]["config"]["provider"]["compaction"]["compaction"]["block_retention"]
    assert re.fullmatch(r"\d+h", retention)


# --- the network: every call the lab makes, and nothing else --------------------------------------------------------


@dataclass
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: frozenset[tuple[int, str]] = frozenset()  # (port, protocol)
    port_names: Mapping[str, int] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceModel:
    pods: tuple[str, ...]  # pod names
    ports: Mapping[int, int]  # service port -> pod port


def namespace_labels(namespace: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": namespace}
    if namespace == "edge":
        labels["shoplab.io/edge"] = "true"  # README: label the ingress controller's or Locust's namespace
    return labels


EDGE = Pod("edge", "edge", {})
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, frozenset({(53, "UDP"), (53, "TCP")}))


@cache
def external_pods() -> tuple[Pod, ...]:
    """prod's Tempo and Loki pods as the pinned charts label them (app.kubernetes.io/name, component; release names
    tempo and loki in namespace observability, charts.yaml), with the ports they listen on and the annotations the
    values files give them. Not rendered here (no Helm): these are the charts' facts the policies rely on."""

    def chart_pod(release: str, component: str, ports: set[int], annotations: Mapping[str, str]) -> Pod:
        labels = {"app.kubernetes.io/name": release, "app.kubernetes.io/component": component}
        return Pod(
            f"{release}-{component}", "observability", labels, frozenset((p, "TCP") for p in ports), {}, annotations
        )

    tempo = helm_values("tempo")["defaults"]["podAnnotations"]
    loki = helm_values("loki")["defaults"]["podAnnotations"]
    tempo_components = ("query-frontend", "querier", "metrics-generator", "live-store", "block-builder")
    pods = [chart_pod("tempo", "distributor", {4317, 3200}, tempo)]
    pods += [chart_pod("tempo", component, {3200}, tempo) for component in tempo_components]
    pods += [chart_pod("tempo", component, {3200}, tempo) for component in ("backend-scheduler", "backend-worker")]
    pods += [chart_pod("loki", component, {3100}, loki) for component in ("write", "read", "backend")]
    pods.append(chart_pod("loki", "gateway", {8080}, {}))  # nginx: the chart does not annotate it
    return tuple(pods)


EXTERNAL_SERVICES = {
    # Service: (pods, service port -> pod port), as the charts define them (loki-gateway: port 80, nginx on 8080).
    "tempo-distributor.observability": ServiceModel(("tempo-distributor",), {4317: 4317, 3200: 3200}),
    "tempo-query-frontend.observability": ServiceModel(("tempo-query-frontend",), {3200: 3200}),
    "loki-gateway.observability": ServiceModel(("loki-gateway",), {80: 8080}),
}


class Network:
    """An overlay's pods, Services and NetworkPolicies, with the calls the policies allow."""

    def __init__(self, render: Render, overlay: str) -> None:
        self.render = render
        self.overlay = overlay
        self.pods: dict[str, Pod] = {}
        for name, workload in render.workloads().items():
            ports, names = set(), {}
            for container in pod_spec(workload)["containers"]:
                for port in container.get("ports", []):
                    ports.add((port["containerPort"], port.get("protocol", "TCP")))
                    if "name" in port:
                        names[port["name"]] = port["containerPort"]
            annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
            self.pods[name] = Pod(name, NAMESPACE, pod_labels(workload), frozenset(ports), names, annotations)
        self.others = [EDGE, KUBE_DNS, *(external_pods() if overlay == "prod" else ())]
        self.policies = render.of_kind("NetworkPolicy")
        self.services: dict[str, ServiceModel] = dict(EXTERNAL_SERVICES if overlay == "prod" else {})
        for service in render.of_kind("Service"):
            selected = tuple(
                n for n, p in self.pods.items() if selects({"matchLabels": service["spec"]["selector"]}, p.labels)
            )
            mapping = {}
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                mapping[port["port"]] = self.pods[selected[0]].port_names[target] if isinstance(target, str) else target
            self.services[service["metadata"]["name"]] = ServiceModel(selected, mapping)

    def all_pods(self) -> list[Pod]:
        return [*self.pods.values(), *self.others]

    def pod(self, name: str) -> Pod:
        (found,) = [pod for pod in self.all_pods() if pod.name == name]
        return found

    def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        """The (pod, pod port) pairs an address reaches: a Service, a Service in another namespace, or one
        StatefulSet pod through its headless Service (<pod>-<n>.<service>)."""
        host = re.sub(rf"\.({NAMESPACE}\.)?svc(\.cluster\.local)?$", "", host)
        host = re.sub(rf"\.{NAMESPACE}$", "", host)
        if host in self.services:
            service = self.services[host]
            return [(pod, service.ports[port]) for pod in service.pods]
        match = re.fullmatch(r"([\w-]+)-(\d+)\.([\w-]+)", host)
        assert match and match[3] in self.services, f"{host} is no Service of the {self.overlay} overlay"
        workload = self.render.workloads()[match[1]]
        assert int(match[2]) < workload["spec"]["replicas"], f"{host}: no such replica"
        return [(match[1], self.services[match[3]].ports[port])]

    def calls_to(self, source: str, address: str) -> set[tuple[str, str, int, str]]:
        """The calls `source` makes to an address: a URL (default ports 80/443) or host:port."""
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        assert parts.hostname, address
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        return {(source, pod, pod_port, "TCP") for pod, pod_port in self.resolve(parts.hostname, port)}

    # -- what the policies allow --

    def _peer_matches(self, peer: Mapping[str, Any], pod: Pod) -> bool:
        if "ipBlock" in peer:
            return False  # the API server (Prometheus only), checked on its own
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], namespace_labels(pod.namespace))
        else:
            in_namespace = pod.namespace == NAMESPACE
        return in_namespace and selects(peer.get("podSelector", {}), pod.labels)

    def _allowed(self, pod: Pod, direction: str, peer: Pod, port: int, protocol: str) -> bool:
        key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        for policy in self.policies:
            spec = policy["spec"]
            if direction not in spec["policyTypes"] or not selects(spec["podSelector"], pod.labels):
                continue
            for rule in spec.get(key, []):
                peer_ok = not rule.get(peers) or any(self._peer_matches(p, peer) for p in rule[peers])
                ports = rule.get("ports")
                port_ok = not ports or any(
                    (p["port"], p.get("protocol", "TCP")) == (port, protocol)
                    for p in ports
                    if isinstance(p["port"], int)
                )
                if peer_ok and port_ok:
                    return True
        return False

    def allowed_calls(self) -> set[tuple[str, str, int, str]]:
        """Every (source, destination, port, protocol) the policies let through. Only this namespace's pods are
        governed here: a pod elsewhere needs only our side's egress or ingress."""
        calls = set()
        for source in self.all_pods():
            for destination in self.all_pods():
                for port, protocol in destination.ports:
                    egress = source.namespace != NAMESPACE or self._allowed(
                        source, "Egress", destination, port, protocol
                    )
                    ingress = destination.namespace != NAMESPACE or self._allowed(
                        destination, "Ingress", source, port, protocol
                    )
                    if egress and ingress and NAMESPACE in (source.namespace, destination.namespace):
                        calls.add((source.name, destination.name, port, protocol))
        return calls

    # -- what the lab calls --

    def expected_calls(self) -> set[tuple[str, str, int, str]]:
        calls = {(pod.name, "kube-dns", 53, protocol) for pod in self.pods.values() for protocol in ("UDP", "TCP")}
        calls |= self.env_calls() | self.config_calls() | self.scrape_calls()
        # People and the load generator: the services Locust calls (locustfiles/_settings.py), and Grafana.
        public = re.findall(r'"SHOP_(\w+)_URL"', (REPO / "locustfiles" / "_settings.py").read_text())
        for service in [name.lower() for name in public] + ["grafana"]:
            calls |= {("edge", pod, port, "TCP") for pod, port in self.resolve(service, self.service_port(service))}
        return calls

    def service_port(self, service: str) -> int:
        (port,) = self.services[service].ports
        return port

    def env_calls(self) -> set[tuple[str, str, int, str]]:
        """Every address a container's environment names (*_URL, *_ENDPOINT): a call."""
        calls = set()
        for name, workload in self.render.workloads().items():
            for container in pod_spec(workload)["containers"]:
                for variable, value in self.render.env(container).items():
                    # GRAFANA_URL only makes links in incidents, opened by a person's browser: not a call.
                    if re.search(r"_(URL|ENDPOINT)$", variable) and variable != "GRAFANA_URL":
                        calls |= self.calls_to(name, value)
        return calls

    def config_calls(self) -> set[tuple[str, str, int, str]]:
        """The addresses in the configs the manifests mount: the agent's exporters, Alertmanager's receivers and
        peers, Grafana's data sources, Tempo's remote write (dev's config, prod's Helm values)."""
        calls = set()
        agent = collector_config("agent")["exporters"]
        resolver = agent["loadbalancing"]["resolver"]["dns"]
        calls |= self.calls_to("otel-agent", f"{resolver['hostname']}:{resolver['port']}")
        calls |= self.calls_to("otel-agent", agent["otlp_grpc/gateway"]["endpoint"])
        gateway = collector_config("gateway")["exporters"]
        gateway_env = self.render.env(main_container(self.render.workloads()["otel-gateway"]))
        for exporter in gateway.values():
            address = re.sub(r"\$\{env:(\w+)\}", lambda m: gateway_env[m[1]], exporter["endpoint"])
            calls |= self.calls_to("otel-gateway", address)
        alertmanager = yaml.safe_load(self.render.generated("alertmanager-config")["data"]["alertmanager.yml"])
        for receiver in alertmanager["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                calls |= self.calls_to("alertmanager", webhook["url"])
        for argument in main_container(self.render.workloads()["alertmanager"])["args"]:
            if argument.startswith("--cluster.peer="):
                for _, pod, port, _ in self.calls_to("alertmanager", argument.split("=", 1)[1]):
                    calls |= {("alertmanager", pod, port, protocol) for protocol in ("TCP", "UDP")}  # memberlist
        grafana_env = self.render.env(main_container(self.render.workloads()["grafana"]))
        datasources = yaml.safe_load(self.render.generated("grafana-datasources")["data"]["datasources.yaml"])
        for datasource in datasources["datasources"]:
            url = re.sub(r"\$\{(\w+)\}", lambda m: grafana_env[m[1]], datasource["url"])
            calls |= self.calls_to("grafana", url)
        if self.overlay == "dev":
            tempo = yaml.safe_load(self.render.generated("tempo-config")["data"]["tempo.yaml"])
            writers, writes = "tempo", tempo["metrics_generator"]["storage"]["remote_write"]
        else:
            writers, writes = "tempo-metrics-generator", helm_values("tempo")["metricsGenerator"]["config"]["storage"]
            writes = writes["remote_write"]
            # An HA pair, not a cluster: each Prometheus replica receives everything.
            assert len(writes) == self.render.workloads()["prometheus"]["spec"]["replicas"]
        for write in writes:
            calls |= self.calls_to(writers, write["url"])
        return calls

    def scrape_calls(self) -> set[tuple[str, str, int, str]]:
        return {("prometheus", pod, port, "TCP") for pod, port, _ in self.prometheus_targets()}

    def prometheus_targets(self) -> set[tuple[str, int, str]]:
        """(pod, port, job) of every target Prometheus's own configuration finds, scrape jobs and Alertmanagers:
        its relabelling applied to the pods' labels and annotations, as kubernetes_sd_configs (role: pod) sees them."""
        config = yaml.safe_load(self.render.generated("prometheus-config")["data"]["prometheus.yml"])
        found = set()
        for job in config["scrape_configs"] + config["alerting"]["alertmanagers"]:
            for sd in job.get("kubernetes_sd_configs", []):
                assert sd["role"] == "pod"
                watched = {NAMESPACE} if sd["namespaces"].get("own_namespace") else set()
                watched |= set(sd["namespaces"].get("names", []))
                for pod in self.all_pods():
                    if pod.namespace in watched:
                        for port, label in self.targets(job.get("relabel_configs", []), pod):
                            found.add((pod.name, port, label or job.get("job_name", "alerting")))
        return found

    def targets(self, relabelling: list[dict[str, Any]], pod: Pod) -> set[tuple[int, str]]:
        """(port, job label) of the targets one pod yields."""
        found = set()
        for port, protocol in sorted(pod.ports) or [(0, "TCP")]:
            meta = {
                "__address__": f"10.0.0.1:{port}" if port else "10.0.0.1",
                "__meta_kubernetes_namespace": pod.namespace,
                "__meta_kubernetes_pod_name": pod.name,
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_container_port_number": str(port) if port else "",
                "__meta_kubernetes_pod_container_port_name": next(
                    (n for n, p in pod.port_names.items() if p == port), ""
                ),
                "__meta_kubernetes_pod_container_port_protocol": protocol,
                **{f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in pod.labels.items()},
                **{
                    f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                    for k, v in pod.annotations.items()
                },
            }
            labels = relabel(meta, relabelling)
            if labels is not None:
                target = int(labels["__address__"].rpartition(":")[2])
                assert (target, "TCP") in pod.ports, f"{pod.name} is scraped on {target}, which it does not listen on"
                found.add((target, labels.get("job", "")))
        return found


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabel_configs (keep, drop, replace) on one target; None when dropped."""
    for config in configs:
        value = config.get("separator", ";").join(labels.get(name, "") for name in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        action = config.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$(\d+)", r"\\\1", config.get("replacement", "$1"))
            labels[config["target_label"]] = match.expand(replacement)
        assert action in ("keep", "drop", "replace"), action
    return labels


def network(rendered: Rendered, overlay: str) -> Network:
    return Network(renders(rendered, overlay), overlay)


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_calls_the_lab_makes(rendered: Rendered, overlay: str) -> None:
    net = network(rendered, overlay)
    expected, allowed = net.expected_calls(), net.allowed_calls()
    assert sorted(expected - allowed) == [], "calls the lab makes that no policy allows"
    assert sorted(allowed - expected) == [], "calls the policies allow that the lab does not make"


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_calls_what_its_settings_name(rendered: Rendered, overlay: str) -> None:
    # Each *_URL a service reads (its SETTINGS) is set in its manifest, so the network test sees the call; a new
    # setting with a native default (127.0.0.1) would otherwise pass unnoticed and fail in the cluster.
    render = renders(rendered, overlay)
    for name in SHOP:
        settings = importlib.import_module(name).SETTINGS
        urls = {setting.name for setting in settings if setting.name.endswith("_URL")}
        env = render.env(main_container(render.workloads()[name]))
        assert urls <= set(env), f"{name} reads {sorted(urls - set(env))} but its manifest does not set them"
    env = render.env(main_container(render.workloads()["checkout"]))
    assert {variable for variable in env if variable.endswith("_URL")} == {"AUTH_URL", "CATALOG_URL", "PAYMENT_URL"}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_starts_denied_but_name_lookups(rendered: Rendered, overlay: str) -> None:
    render = renders(rendered, overlay)
    policies = {policy["metadata"]["name"]: policy["spec"] for policy in render.of_kind("NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # The one address block anyone may reach is the API server's ports, for Prometheus's pod discovery.
    blocks = [
        (name, rule["ports"])
        for name, spec in policies.items()
        for rule in spec.get("egress", [])
        if any("ipBlock" in peer for peer in rule["to"])
    ]
    assert blocks == [("prometheus", [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}])]
    assert all(
        (443, "TCP") not in p.ports and (6443, "TCP") not in p.ports for p in network(rendered, overlay).all_pods()
    )


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_every_job_the_rules_name(rendered: Rendered, overlay: str) -> None:
    net = network(rendered, overlay)
    targets = net.prometheus_targets()
    # Every annotated pod is a target, under the job its annotation names.
    annotated = {(pod.name, pod.annotations["shoplab.io/job"]) for pod in net.all_pods() if pod.annotations}
    assert {(pod, job) for pod, _, job in targets if job != "alerting"} == annotated
    rules = "".join(path.read_text() for path in (REPO / "prometheus" / "rules").glob("*.rules.yml"))
    named = set(re.findall(r'job="([\w-]+)"', rules))
    for pattern in re.findall(r'job=~"([^"]+)"', rules):
        named |= set(pattern.split("|"))
    # Each job the rules alert on (job="shop", TelemetryBackendDown's tempo|loki|grafana|alertmanager) has targets.
    assert named <= {job for _, _, job in targets}, sorted(named - {job for _, _, job in targets})
