"""The real Prometheus and Alertmanager from Debian's packages, started on the project's own configuration."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from shop import REPO, poll_until
from shoplib.supervisor import free_ports

PROMETHEUS_DIR = REPO / "prometheus"


def binary(name: str, packages: str = "prometheus prometheus-alertmanager") -> str:
    """The path of a Debian-packaged tool (from `packages`). Missing, it skips the test, or fails it in CI;
    outside pytest (a benchmark) it is an error naming the packages."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {packages})"
        if "PYTEST_CURRENT_TEST" not in os.environ:
            raise FileNotFoundError(message)
        import pytest  # only under pytest: benchmarks import this module too

        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def native_config(ports: Mapping[str, int], own_address: str, alertmanager: str | None = None) -> dict[str, Any]:
    """prometheus.yml with only addresses changed: shop targets to the native services, its own to where it
    listens, rule files to the repo's, and no Alertmanager. Tempo, Loki and Grafana stay
    as they are: nothing answers there natively, so their targets are down."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            group["targets"] = [_native(target, ports, own_address) for target in group["targets"]]
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / Path(pattern).name) for pattern in config["rule_files"]]
    # None runs beside it, unless one is given (host:port).
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager] if alertmanager else []
    return dict(config)


def _native(target: str, ports: Mapping[str, int], own_address: str) -> str:
    host = target.split(":", maxsplit=1)[0]
    if host == "localhost":
        return own_address
    return f"127.0.0.1:{ports[host]}" if host in ports else target


class Prometheus:
    """Debian's Prometheus on the project's configuration, pointed at a running native shop (its ports)."""

    def __init__(self, workdir: Path, ports: Mapping[str, int], alertmanager: str | None = None) -> None:
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(native_config(ports, f"127.0.0.1:{self.port}", alertmanager)))
        self.log_path = workdir / "prometheus.log"
        self.args = [
            binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # The same features compose.yaml turns on for the pinned image.
            "--enable-feature=exemplar-storage",
            "--web.enable-remote-write-receiver",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        poll_until(self._ready, timeout=30, what=f"Prometheus to be ready ({self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": str(at)} if at else {})}
        body = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def firing(self) -> list[dict[str, Any]]:
        alerts = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [alert for alert in alerts if alert["state"] == "firing"]

    def targets_up(self, job: str) -> bool:
        return bool(self.query(f'up{{job="{job}"}} == 1')) and not self.query(f'up{{job="{job}"}} == 0')


class Alertmanager:
    """Debian's Alertmanager on the project's alertmanager.yml, only its receivers' addresses changed: the sink's
    to `webhook_url`, the responder's to `responder_url` (unset: a port nothing listens on, as when the responder
    is down; Alertmanager retries it and delivers to the sink regardless)."""

    def __init__(
        self,
        workdir: Path,
        webhook_url: str,
        responder_url: str | None = None,
        responder_token: str = secrets.token_urlsafe(32),  # paging nobody's responder: any token will do
    ) -> None:
        config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
        self.port, closed = free_ports(2)
        urls = {"alert-sink": webhook_url, "responder": responder_url or f"http://127.0.0.1:{closed}/alerts"}
        token_file = workdir / "responder_token"
        token_file.write_text(responder_token + "\n")  # as lab-init writes it
        for receiver in config["receivers"]:
            webhook = receiver["webhook_configs"][0]
            webhook["url"] = urls[receiver["name"]]  # a new receiver needs an address here
            if "http_config" in webhook:
                webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{self.port}"
        self.api = f"http://{self.address}/api/v2/alerts"
        self.args = [
            binary("prometheus-alertmanager"),
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll_until(self._ready, timeout=30, what="Alertmanager to be ready")
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{self.address}/-/ready", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)
