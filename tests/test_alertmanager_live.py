"""The real Alertmanager (Debian's) on the project's alertmanager.yml delivers every alert to the lab's webhook
sink, which logs one JSON line per alert, and pages to the responder too (a second sink stands in for it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import requests
import yaml

from prom import Alertmanager, binary
from shop import REPO, poll_until
from shoplib.supervisor import free_ports

pytestmark = pytest.mark.integration  # every test here starts a process

SINK = REPO / "alertmanager" / "webhook_sink.py"


@contextmanager
def _running_sink(log):
    (port,) = free_ports(1)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(SINK)], env={**os.environ, "PORT": str(port)}, stdout=out)
    url = f"http://127.0.0.1:{port}"
    try:
        poll_until(lambda: _answers(f"{url}/healthz"), what="the webhook sink")
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def sink(tmp_path):
    with _running_sink(tmp_path / "sink.log") as running:
        yield running


@pytest.fixture
def responder_sink(tmp_path):
    """Where the responder receiver's webhooks land: the same sink program, standing in for the responder."""
    with _running_sink(tmp_path / "responder.log") as running:
        yield running


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
def alertmanager(sink, responder_sink, tmp_path):
    """The real Alertmanager on the project's alertmanager.yml, delivering to the sink and to the stand-in
    responder; yields its v2 alerts API."""
    url, _log = sink
    responder_url, _responder_log = responder_sink
    running = Alertmanager(tmp_path, f"{url}/alerts", f"{responder_url}/alerts").start()
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


def test_a_dependency_that_pages_holds_back_the_checkout_pages_it_explains_and_no_others(
    sink, responder_sink, alertmanager
):
    """Page the culprit, not the victims: payment's alert goes out, to the responder too; checkout's slowness on
    the route where its calls to payment are slow, and the fast budget burn, are held back from both receivers.
    checkout's alerts that name no dependency, or another one, still page; the slow-burn ticket still goes out."""
    _url, log = sink
    _responder_url, responder_log = responder_sink
    culprit = page("RouteSlowerThanUsual", "payment", method="POST", route="/payments")
    victim = page("RouteSlowerThanUsual", "checkout", method="POST", route="/orders", dependency="payment")
    own = page("RouteSlowerThanUsual", "checkout", method="GET", route="/orders")
    other = page("RouteFailingMoreThanUsual", "checkout", method="GET", route="/orders", dependency="auth")
    fast_burn = page("CheckoutLatencyBudgetBurn", "checkout", long_window="1h")
    slow_burn = page("CheckoutLatencyBudgetBurn", "checkout", long_window="6h")
    slow_burn["labels"]["severity"] = "ticket"
    assert requests.post(alertmanager, json=[culprit, victim, own, other, fast_burn, slow_burn], timeout=5).ok

    def sent(lines):
        return {
            (e["alertname"], e["labels"]["service"], e["labels"].get("route"), e["labels"]["severity"])
            for e in _lines(lines)
            if e.get("status") == "firing"
        }

    expected = {
        ("RouteSlowerThanUsual", "payment", "/payments", "page"),
        ("RouteSlowerThanUsual", "checkout", "/orders", "page"),
        ("RouteFailingMoreThanUsual", "checkout", "/orders", "page"),
        ("CheckoutLatencyBudgetBurn", "checkout", None, "ticket"),
    }
    poll_until(
        lambda: sent(log) >= expected and len(sent(responder_log)) >= 3,
        timeout=40,
        what="the culprit's page, checkout's own pages and its slow-burn ticket at the sink and the responder",
    )
    assert sent(log) == expected
    assert sent(responder_log) == {entry for entry in expected if entry[3] == "page"}
    held = requests.get(alertmanager, params={"filter": 'service="checkout"', "inhibited": "true"}, timeout=5).json()
    states = {
        (a["labels"]["alertname"], a["labels"].get("dependency"), a["labels"]["severity"]): a["status"] for a in held
    }
    for victim_page in (("RouteSlowerThanUsual", "payment", "page"), ("CheckoutLatencyBudgetBurn", None, "page")):
        assert states[victim_page]["state"] == "suppressed" and states[victim_page]["inhibitedBy"]
    for still_paging in (("RouteSlowerThanUsual", None, "page"), ("RouteFailingMoreThanUsual", "auth", "page")):
        assert states[still_paging]["state"] == "active"
    assert states[("CheckoutLatencyBudgetBurn", None, "ticket")]["state"] == "active"


def test_a_fast_burn_page_waits_for_the_dependency_page_that_explains_it(sink, responder_sink, alertmanager):
    """The SLO page fires first (a young lab's 1 h window is short); payment's page follows 12 s later, inside
    the SLO route's 30 s group_wait, and holds it back: only payment is paged."""
    _url, log = sink
    _responder_url, responder_log = responder_sink
    assert requests.post(alertmanager, json=[page("CheckoutErrorBudgetBurn", "checkout", long_window="1h")]).ok
    time.sleep(12)  # longer than the default 10 s group_wait: without the SLO route's own, it would be out
    assert requests.post(alertmanager, json=[page("HighErrorRate", "payment")], timeout=5).ok
    poll_until(lambda: _lines(responder_log), timeout=30, what="payment's page at the responder")
    time.sleep(25)  # past the SLO route's 30 s group_wait
    for lines in (log, responder_log):
        assert {(e["alertname"], e["labels"]["service"]) for e in _lines(lines) if "alertname" in e} == {
            ("HighErrorRate", "payment")
        }


def test_checkouts_dependencies_in_the_inhibit_rules_are_the_ones_compose_wires():
    """One rule per dependency (its page holds back checkout's alerts naming it); the SLO pages are held by any
    of them, or by checkout's own alert naming one."""
    rules = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())["inhibit_rules"]
    wired = {
        name.removesuffix("_URL").lower()
        for name in yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["checkout"]["environment"]
        if name.endswith("_URL") and name.removesuffix("_URL") in ("AUTH", "CATALOG", "PAYMENT")
    }
    slo = [r for r in rules if any(m.startswith("alertname=~") for m in r["target_matchers"])]
    named = {r["source_matchers"][0]: r["target_matchers"] for r in rules if r not in slo}
    assert named == {f'service="{d}"': ['service="checkout"', 'severity="page"', f'dependency="{d}"'] for d in wired}
    assert [r["source_matchers"][0] for r in slo] == [f'service=~"{"|".join(sorted(wired))}"', 'service="checkout"']
    assert slo[1]["source_matchers"][2] == 'dependency=~".+"'


def test_checkouts_alert_naming_a_dependency_holds_back_its_fast_burn_page(sink, responder_sink, alertmanager):
    """Before the dependency's own page fires: checkout's alert naming it goes out, its SLO page does not."""
    _url, log = sink
    symptom = page("RouteFailingMoreThanUsual", "checkout", method="POST", route="/orders", dependency="auth")
    assert requests.post(alertmanager, json=[page("CheckoutErrorBudgetBurn", "checkout", long_window="1h")]).ok
    assert requests.post(alertmanager, json=[symptom], timeout=5).ok
    poll_until(lambda: _lines(log), timeout=30, what="checkout's alert at the sink")
    time.sleep(35)  # past the SLO route's 30 s group_wait
    assert {e["alertname"] for e in _lines(log) if "alertname" in e} == {"RouteFailingMoreThanUsual"}


def _receivers(alertmanager, alertname):
    """The receivers Alertmanager routed an alert to, by its own account (GET /api/v2/alerts)."""
    alerts = requests.get(alertmanager, params={"filter": f'alertname="{alertname}"'}, timeout=5).json()
    return {receiver["name"] for alert in alerts for receiver in alert["receivers"]}


def test_a_page_reaches_the_responder_and_the_sink_a_ticket_only_the_sink(sink, responder_sink, alertmanager):
    _url, log = sink
    _responder_url, responder_log = responder_sink
    paged = page("PaymentErrorsSpike", "payment")
    ticket = page("ShopTelemetryExportFailing", "payment")
    ticket["labels"]["severity"] = "ticket"
    assert requests.post(alertmanager, json=[paged, ticket], timeout=5).ok

    def firing(lines):
        return {(e["alertname"], e["receiver"]) for e in _lines(lines) if e.get("status") == "firing"}

    poll_until(
        lambda: (
            firing(log) >= {("PaymentErrorsSpike", "alert-sink"), ("ShopTelemetryExportFailing", "alert-sink")}
            and firing(responder_log)
        ),
        timeout=30,
        what="the page at both receivers and the ticket at the sink (group_wait is 10 s)",
    )
    assert firing(responder_log) == {("PaymentErrorsSpike", "responder")}
    assert _receivers(alertmanager, "PaymentErrorsSpike") == {"responder", "alert-sink"}
    assert _receivers(alertmanager, "ShopTelemetryExportFailing") == {"alert-sink"}

    # The responder hears of the resolution too: it closes the incident then.
    resolved = {**paged, "endsAt": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    assert requests.post(alertmanager, json=[resolved], timeout=5).ok
    poll_until(
        lambda: [e for e in _lines(responder_log) if e.get("status") == "resolved"],
        timeout=60,
        what="the resolution at the responder (group_interval is 30 s)",
    )


def test_amtool_accepts_the_config_and_routes_pages_to_the_responder_and_the_sink():
    config = REPO / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run(
        [binary("amtool"), "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    expected = {
        ("severity=page", "service=payment", "alertname=PaymentErrorsSpike"): "responder,alert-sink",
        ("severity=ticket", "service=checkout", "alertname=CheckoutLatencyBudgetBurn"): "alert-sink",
        ("alertname=NoSeverity",): "alert-sink",
    }
    for labels, receivers in expected.items():
        routed = subprocess.run(
            [binary("amtool"), "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (routed.returncode, routed.stdout.strip()) == (0, receivers), labels


def test_the_sink_stops_at_once_on_sigterm(tmp_path):
    """`docker compose stop` sends SIGTERM to PID 1 and kills it 10 s later: the sink must end on the signal."""
    (port,) = free_ports(1)
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(SINK)], env={**os.environ, "PORT": str(port)}, stdout=out)
    try:
        poll_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), what="the webhook sink")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 2
        assert json.loads(log.read_text().splitlines()[-1])["message"] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
