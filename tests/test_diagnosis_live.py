"""`shoplab diagnose` end to end: the four services as real processes under steady traffic, the real
Prometheus scraping them, and test doubles of Tempo's and Loki's read APIs answering from the OTLP test
receiver (tests/backend_doubles.py). Every fault in the shop's catalogue and incidents from outside the shop
(a stalled process, another process on the SQLite write lock) must name the right service, and the operation
where the incident has one; a healthy shop must be called healthy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from backend_doubles import BackendDouble
from incident.drills import Drill, Traffic, catalogue
from shop import python

WINDOW_S = 15  # the diagnosed window; the same span just before it is the baseline
SETTLE_S = 5  # after undoing a drill, before the next baseline starts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backends(otlp, prometheus) -> Iterator[dict[str, str]]:
    tempo, loki = BackendDouble("tempo", otlp).start(), BackendDouble("loki", otlp).start()
    yield {"PROMETHEUS_URL": prometheus.url, "TEMPO_URL": tempo.url, "LOKI_URL": loki.url}
    tempo.stop()
    loki.stop()


@pytest.fixture(scope="module")
def traffic(shop) -> Iterator[Traffic]:
    running = Traffic(shop.urls).start()
    time.sleep(2 * WINDOW_S)  # a baseline before the first diagnosis
    yield running
    running.stop()


def diagnose(backends: dict[str, str], *args: str) -> tuple[int, dict]:
    result = python("-m", "incident.cli", "diagnose", "--window", f"{WINDOW_S}s", "--json", *args, env=backends)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_healthy_shop_under_traffic_is_healthy(backends, traffic):
    code, diagnosis = diagnose(backends)
    assert not diagnosis["unavailable"], diagnosis["unavailable"]
    assert (code, diagnosis["status"], diagnosis["culprit"]) == (0, "healthy", None), diagnosis
    assert traffic.requests > 100 and traffic.failures == 0


def test_the_gate_passes_the_healthy_shop_and_fails_it_on_a_tighter_budget(backends, traffic):
    window = ("--window", f"{WINDOW_S}s")
    passed = python("-m", "incident.cli", "gate", *window, env=backends)
    assert passed.returncode == 0 and passed.stdout.startswith("gate passed"), passed.stdout + passed.stderr
    failed = python("-m", "incident.cli", "gate", *window, "--p95", "1ms", env=backends)
    assert failed.returncode == 1 and failed.stdout.startswith("gate FAILED"), failed.stdout + failed.stderr
    assert "checkout: p95" in failed.stdout and "> 0.001 s" in failed.stdout
    assert "HEALTHY" in failed.stdout  # the diagnosis printed with it: slow for the budget, not an incident


@pytest.mark.parametrize("drill", catalogue(), ids=lambda drill: drill.name)
def test_the_culprit_is_named(backends, traffic, shop, clean_faults, drill: Drill):
    time.sleep(SETTLE_S + WINDOW_S)  # a clean baseline
    undo = drill.inject(shop)
    try:
        time.sleep(WINDOW_S)
        code, diagnosis = diagnose(backends)
    finally:
        undo()
    assert not diagnosis["unavailable"], diagnosis["unavailable"]
    assert code == 1 and diagnosis["status"] == "incident", diagnosis
    culprit = diagnosis["culprit"]
    assert culprit["service"] == drill.service, json.dumps(diagnosis, indent=1)
    if drill.operation is not None:
        assert culprit["operation"] == drill.operation, json.dumps(diagnosis, indent=1)
    assert {e["signal"] for e in diagnosis["evidence"]} >= {"metrics"}
