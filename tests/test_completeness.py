"""Telemetry matches the traffic 1:1 at peak: every request Locust sent is one server span in the service it went
to, every order is one complete trace across the four services with log records from each, and nothing was
dropped on the way. A short real peak hour (Locust, headless) against the real shop, exporting to the tests' OTLP
receiver (a double that stores what it is sent, not Tempo or Loki)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from otlp_receiver import OtlpReceiver, Span
from shop import REPO, ShopUnderTest, exporting_to, python
from shoplib.services import SERVICES

pytestmark = pytest.mark.integration  # the shop, Locust and the receiver run as real processes and threads

SERVER = 2  # OTLP's SPAN_KIND_SERVER
PEAK_USERS = 16


@dataclass
class PeakHour:
    sent: Counter[str]  # requests Locust sent, by the service they went to
    orders: int  # POST /orders among them
    spans: list[Span]
    receiver: OtlpReceiver
    metrics: dict[str, str]  # each service's /metrics, read just before it stopped
    stdout: str  # every JSON log line the services printed


@pytest.fixture(scope="module")
def peak_hour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeakHour]:
    workdir = tmp_path_factory.mktemp("completeness")
    receiver = OtlpReceiver().start()
    env = exporting_to(receiver.endpoint, 200, SEED_ORDERS="2000")
    shop = ShopUnderTest(workdir, env).start()
    try:
        result = python(
            "-m",
            "locust",
            "-f",
            str(REPO / "locustfiles" / "locustfile.py"),
            "--headless",
            "--shape",
            "PeakHourShape",
            "--only-summary",
            "--stop-timeout",  # users finish the request under way when the shape ends: Locust counts every one
            "10s",
            "--csv",
            str(workdir / "run"),
            cwd=workdir,
            env={
                "SHOP_CATALOG_URL": shop.url("catalog"),
                "SHOP_CHECKOUT_URL": shop.url("checkout"),
                "SHOP_AUTH_URL": shop.url("auth"),
                "SHOP_THINK_TIME_SCALE": "0.05",
                "SHOP_PEAK_USERS": str(PEAK_USERS),
                "SHOP_PEAK_DURATION": "20s",
            },
            timeout=90,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = {s: requests.get(shop.url(s, "/metrics"), timeout=5).text for s in SERVICES}
    finally:
        assert shop.stop() == 0  # SIGTERM: each service flushes what it still holds before it exits
        receiver.stop()
    with (workdir / "run_stats.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["Name"] != "Aggregated"]
    assert sum(int(row["Failure Count"]) for row in rows) == 0
    sent: Counter[str] = Counter()
    for row in rows:
        sent[row["Name"].split(" ", 1)[0]] += int(row["Request Count"])  # Locust names start with the service
    orders = sum(
        int(r["Request Count"]) for r in rows if r["Type"] == "POST" and r["Name"].startswith("checkout /orders")
    )
    yield PeakHour(sent, orders, list(receiver.spans), receiver, metrics, shop.stdout_path.read_text())


def test_every_request_the_shop_served_is_one_server_span(peak_hour: PeakHour) -> None:
    """Counted by the shop itself (its RED histogram counts every request but /healthz, /readyz and /metrics,
    which are not traced either), against the SERVER spans the receiver got."""
    spans = Counter(s.service for s in peak_hour.spans if s.kind == SERVER)
    served = {
        service: sum(
            float(value)
            for value in re.findall(
                rf'^http_request_duration_seconds_count\{{[^}}]*service="{service}"[^}}]*\}} (\S+)$', text, re.MULTILINE
            )
        )
        for service, text in peak_hour.metrics.items()
    }
    assert {service: float(count) for service, count in spans.items()} == served


def test_every_request_locust_sent_is_a_server_span_in_its_service(peak_hour: PeakHour) -> None:
    # Locust sends no trace context, so each of its requests starts a trace: a SERVER span without a parent.
    # Locust can leave a request uncounted when it stops a user in the middle of it (seen: up to 3 in a run), so
    # the shop may have served a few more than Locust reports, never fewer.
    roots = Counter(s.service for s in peak_hour.spans if s.kind == SERVER and not s.parent_span_id)
    assert sum(peak_hour.sent.values()) >= 200 and peak_hour.orders >= 10, peak_hour.sent
    assert set(roots) == set(peak_hour.sent) == {"catalog", "checkout", "auth"}
    for service, sent in peak_hour.sent.items():
        assert sent <= roots[service] <= sent + PEAK_USERS, f"{service}: {roots[service]} spans for {sent} requests"


def test_every_order_is_one_complete_trace_across_the_four_services(peak_hour: PeakHour) -> None:
    order_traces = {
        s.trace_id
        for s in peak_hour.spans
        if s.kind == SERVER and s.service == "checkout" and not s.parent_span_id and s.name == "POST /orders"
    }
    assert peak_hour.orders <= len(order_traces) <= peak_hour.orders + PEAK_USERS
    for trace_id in order_traces:
        spans = peak_hour.receiver.spans_of(trace_id)
        assert {s.service for s in spans} == set(SERVICES), trace_id
        ids = {s.span_id for s in spans}
        assert len(ids) == len(spans), f"{trace_id}: a span id twice"
        orphans = [s.name for s in spans if s.parent_span_id and s.parent_span_id not in ids]
        assert orphans == [], f"{trace_id}: parents missing for {orphans}"
        assert sum(not s.parent_span_id for s in spans) == 1, f"{trace_id}: more than one root"
        logged = {record.service for record in peak_hour.receiver.logs_of(trace_id)}
        assert logged == set(SERVICES), f"{trace_id}: no log records from {set(SERVICES) - logged}"


def test_nothing_was_dropped_or_failed_on_the_way(peak_hour: PeakHour) -> None:
    for service, text in peak_hour.metrics.items():
        for signal in ("traces", "logs"):
            exported = _value(text, "telemetry_exported_items_total", outcome="success", service=service, signal=signal)
            assert exported > 0, f"{service} exported no {signal}"
            failed = _value(text, "telemetry_exported_items_total", outcome="failure", service=service, signal=signal)
            assert failed == 0, f"{service}: {failed:.0f} {signal} failed to export"
            for reason in ("queue_full", "already_shutdown"):
                dropped = _value(text, "telemetry_dropped_items_total", reason=reason, service=service, signal=signal)
                assert dropped == 0, f"{service} dropped {dropped:.0f} {signal} ({reason})"


def _value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition, by its exact labels (sorted, as prometheus_client writes
    them). The shop creates every series it counts at 0, so a missing one is a failure, never a silent 0."""
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(selector)}\}} (\S+)$", exposition, re.MULTILINE)
    assert match, f"no {name}{{{selector}}} in the exposition"
    return float(match.group(1))


# What the load sends that must never be kept anywhere: the cards' full numbers, the customers' passwords, tokens.
SECRETS = ("4242424242424242", "4000000000000002", "4242 4242 4242 4242", "alice-pass", "bob-pass")
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
SECRET_KEYS = re.compile(r"(^|[._])(cvc|password|card\.number|authorization|access_token)$", re.IGNORECASE)


def test_no_card_number_password_or_token_in_any_signal(peak_hour: PeakHour) -> None:
    """Every span and log record exported (as sent, protobuf), every line printed and every metric scraped."""
    signals = {
        "OTLP": b"".join(peak_hour.receiver.raw_payloads),
        "stdout": peak_hour.stdout.encode(),
        "metrics": "".join(peak_hour.metrics.values()).encode(),
    }
    assert len(signals["OTLP"]) > 100_000 and len(signals["stdout"]) > 10_000  # there was plenty to look through
    for name, data in signals.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret!r} in {name}"
        assert not JWT.search(data), f"a JWT in {name}: {JWT.search(data)}"
    keys = {key for span in peak_hour.spans for key in span.attributes}
    keys |= {key for record in peak_hour.receiver.logs for key in record.attributes}
    assert not {key for key in keys if SECRET_KEYS.search(key)}, sorted(keys)
