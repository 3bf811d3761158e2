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

from prom import Alertmanager
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
    """The sink's complete lines (one may be half-written while we read)."""
    return [json.loads(line) for line in log.read_text().split("\n")[:-1]]


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


@pytest.fixture
def alertmanager(sink, tmp_path):
    """The real Alertmanager on the project's alertmanager.yml, delivering to the sink; yields its v2 alerts API."""
    url, _log = sink
    running = Alertmanager(tmp_path, f"{url}/alerts").start()
    yield running.api
    running.stop()


def test_alertmanager_routes_an_alert_to_the_sink_and_its_resolution_too(sink, alertmanager):
    _url, log = sink
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "PaymentErrorsSpike", "service": "payment", "severity": "page"},
        "annotations": {"summary": "payment: 0.42 payment errors per second"},
        "startsAt": now.isoformat(),
    }
    assert requests.post(alertmanager, json=[alert], timeout=5).ok
    poll_until(
        lambda: [e for e in _lines(log) if e.get("status") == "firing"],
        timeout=30,
        what="the firing alert at the sink (group_wait is 10 s)",
    )
    assert requests.post(
        alertmanager, json=[{**alert, "endsAt": (now + timedelta(seconds=1)).isoformat()}], timeout=5
    ).ok
    resolved = poll_until(
        lambda: [e for e in _lines(log) if e.get("status") == "resolved"],
        timeout=60,
        what="the resolution at the sink (group_interval is 30 s)",
    )
    assert resolved[0]["alertname"] == "PaymentErrorsSpike" and resolved[0]["receiver"] == "alert-sink"


def page(alertname, service, **labels):
    return {
        "labels": {"alertname": alertname, "service": service, "severity": "page", **labels},
        "annotations": {"summary": f"{service}: {alertname}"},
        "startsAt": datetime.now(UTC).isoformat(),
    }


def test_a_dependency_that_pages_holds_back_checkouts_pages_but_not_its_slo_ticket(sink, alertmanager):
    """Page the culprit, not the victims: payment's alert goes out; checkout's slowness on the route it calls
    payment from and the fast budget burn it causes are held back; the slow-burn ticket still goes out."""
    _url, log = sink
    culprit = page("RouteSlowerThanUsual", "payment", method="POST", route="/payments")
    victim = page("RouteSlowerThanUsual", "checkout", method="POST", route="/orders")
    fast_burn = page("CheckoutLatencyBudgetBurn", "checkout", long_window="1h")
    slow_burn = page("CheckoutLatencyBudgetBurn", "checkout", long_window="6h")
    slow_burn["labels"]["severity"] = "ticket"
    assert requests.post(alertmanager, json=[culprit, victim, fast_burn, slow_burn], timeout=5).ok

    def sent():
        return {
            (e["alertname"], e["labels"]["service"], e["labels"]["severity"])
            for e in _lines(log)
            if e.get("status") == "firing"
        }

    expected = {("RouteSlowerThanUsual", "payment", "page"), ("CheckoutLatencyBudgetBurn", "checkout", "ticket")}
    poll_until(
        lambda: sent() >= expected,
        timeout=40,
        what="the culprit's page and checkout's slow-burn ticket at the sink",
    )
    assert {(name, sev) for name, service, sev in sent() if service == "checkout"} == {
        ("CheckoutLatencyBudgetBurn", "ticket")
    }
    held = requests.get(alertmanager, params={"filter": 'service="checkout"', "inhibited": "true"}, timeout=5).json()
    states = {(a["labels"]["alertname"], a["labels"]["severity"]): a["status"] for a in held}
    for victim_page in (("RouteSlowerThanUsual", "page"), ("CheckoutLatencyBudgetBurn", "page")):
        assert states[victim_page]["state"] == "suppressed" and states[victim_page]["inhibitedBy"]
    assert states[("CheckoutLatencyBudgetBurn", "ticket")]["state"] == "active"


def test_checkouts_dependencies_in_the_inhibit_rule_are_the_ones_compose_wires():
    (rule,) = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())["inhibit_rules"]
    wired = {
        name.removesuffix("_URL").lower()
        for name in yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["checkout"]["environment"]
        if name.endswith("_URL") and name.removesuffix("_URL") in ("AUTH", "CATALOG", "PAYMENT")
    }
    assert rule["source_matchers"][0] == f'service=~"{"|".join(sorted(wired))}"'
    assert rule["target_matchers"][0] == 'service="checkout"'
