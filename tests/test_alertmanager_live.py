"""The real Alertmanager (Debian's) on the project's alertmanager.yml delivers to the lab's webhook sink,
which logs one JSON line per alert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import requests
import yaml

from prom import binary
from shop import REPO, poll_until
from shoplib.supervisor import free_ports

pytestmark = pytest.mark.integration  # every test here starts a process

SINK = REPO / "alertmanager" / "webhook_sink.py"


@pytest.fixture
def sink(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(SINK)], env={**os.environ, "PORT": str(port)}, stdout=out)
    url = f"http://127.0.0.1:{port}"
    poll_until(lambda: _answers(f"{url}/healthz"), what="the webhook sink")
    yield url, log
    process.terminate()
    process.wait(timeout=10)


def _answers(url):
    try:
        return requests.get(url, timeout=1).ok
    except requests.ConnectionError:
        return False


def _lines(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_sink_logs_each_alert_and_rejects_what_is_not_a_webhook(sink):
    url, log = sink
    payload = {
        "receiver": "alert-sink",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": "payment"},
                "annotations": {"summary": "payment: 30% of requests fail"},
                "startsAt": "2026-11-22T00:00:00Z",
            }
        ],
    }
    assert requests.post(f"{url}/alerts", json=payload, timeout=5).json() == {"received": 1}
    (line,) = [entry for entry in _lines(log) if entry["message"] == "alert"]
    assert line["alertname"] == "HighErrorRate" and line["labels"]["service"] == "payment"
    for bad in (b"not json", b'{"no": "alerts"}', b'{"alerts": 5}'):
        assert requests.post(f"{url}/alerts", data=bad, timeout=5).status_code == 400
    assert requests.post(f"{url}/elsewhere", json=payload, timeout=5).status_code == 404


def test_a_bad_port_is_a_clear_error():
    result = subprocess.run(
        [sys.executable, str(SINK)],
        env={**os.environ, "PORT": "eighty"},
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 2 and "PORT must be a port number" in result.stderr


def test_alertmanager_routes_an_alert_to_the_sink_and_its_resolution_too(sink, tmp_path):
    url, log = sink
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    config["receivers"][0]["webhook_configs"][0]["url"] = f"{url}/alerts"  # only the address changes
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    (port,) = free_ports(1)
    alertmanager = subprocess.Popen(
        [
            binary("prometheus-alertmanager"),
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v2/alerts"
    try:
        poll_until(lambda: _answers(f"http://127.0.0.1:{port}/-/ready"), what="Alertmanager")
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": "PaymentErrorsSpike", "service": "payment", "severity": "page"},
            "annotations": {"summary": "payment: 0.42 payment errors per second"},
            "startsAt": now.isoformat(),
        }
        assert requests.post(api, json=[alert], timeout=5).ok
        poll_until(
            lambda: [e for e in _lines(log) if e.get("status") == "firing"],
            timeout=30,
            what="the firing alert at the sink (group_wait is 10 s)",
        )
        assert requests.post(api, json=[{**alert, "endsAt": (now + timedelta(seconds=1)).isoformat()}], timeout=5).ok
        resolved = poll_until(
            lambda: [e for e in _lines(log) if e.get("status") == "resolved"],
            timeout=60,
            what="the resolution at the sink (group_interval is 30 s)",
        )
        assert resolved[0]["alertname"] == "PaymentErrorsSpike" and resolved[0]["receiver"] == "alert-sink"
    finally:
        alertmanager.terminate()
        alertmanager.wait(timeout=10)
