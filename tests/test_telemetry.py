"""One order = one trace across four services; logs and metrics point back to it; nothing leaks."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time

import pytest
import requests
from flask import Flask
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otlp_receiver import OtlpReceiver
from shop import GOOD_CARD, ShopUnderTest, exporting_to, poll_until
from shoplib.services import SERVICES
from shoplib.supervisor import free_ports
from shoplib.telemetry import (
    QueryRedactingLogFilter,
    QueryRedactingSpanProcessor,
    name_server_span,
    redact_query,
    traced_wsgi,
)

SERVER, CLIENT = 2, 3  # OTLP SpanKind values


@pytest.fixture(scope="module")
def placed(shop):
    """One paid order, and the trace id its checkout log line carries."""
    token = shop.login("alice")
    response = shop.order(token, [{"product_id": 21, "quantity": 1}, {"product_id": 22, "quantity": 2}])
    assert response.status_code == 201, response.text
    order_id = response.json()["order_id"]
    (line,) = poll_until(lambda: shop.logs(message="order_paid", order_id=order_id), what="the order_paid line")
    return {"order_id": order_id, "trace_id": line["trace_id"], "token": token}


def _complete_trace(otlp, trace_id):
    """The trace once every service's server span has arrived (checkout's, the root, ends last)."""
    spans = otlp.spans_of(trace_id)
    return spans if {span.service for span in spans if span.kind == SERVER} == set(SERVICES) else None


def test_an_order_is_one_trace_with_spans_from_all_four_services(otlp, placed):
    spans = poll_until(lambda: _complete_trace(otlp, placed["trace_id"]), what="spans from all four services")
    by_id = {span.span_id: span for span in spans}

    roots = [span for span in spans if not span.parent_span_id]
    assert [(r.service, r.kind, r.name) for r in roots] == [("checkout", SERVER, "POST /orders")]
    orphans = [span.name for span in spans if span.parent_span_id and span.parent_span_id not in by_id]
    assert orphans == []

    def ancestors(span):
        while span.parent_span_id:
            span = by_id[span.parent_span_id]
            yield span

    # Each downstream server span hangs off a checkout client span inside the business step that made it.
    expected_step = {"auth": "verify customer", "catalog": "reserve stock", "payment": "charge payment"}
    for service, step in expected_step.items():
        server = [s for s in spans if s.service == service and s.kind == SERVER]
        assert server, f"no server span from {service}"
        parent = by_id[server[0].parent_span_id]
        assert (parent.service, parent.kind) == ("checkout", CLIENT)
        assert step in [a.name for a in ancestors(parent)]

    gateway = next(s for s in spans if s.name == "gateway authorize")
    assert any(a.service == "payment" and a.kind == SERVER for a in ancestors(gateway))
    db_services = {s.service for s in spans if s.attributes.get("db.system") == "sqlite"}
    assert {"catalog", "checkout", "payment"} <= db_services
    assert "persist order" in {s.name for s in spans}


def test_log_lines_from_all_four_services_carry_the_trace_id(shop, otlp, placed):
    trace_id = placed["trace_id"]

    def stdout_services() -> set[str]:
        return {line["service"] for line in shop.log_lines() if line.get("trace_id") == trace_id}

    # stdout lines leave in 0.2 s batches: wait for all four, then compare (so a failure names who is missing).
    with contextlib.suppress(pytest.fail.Exception):
        poll_until(lambda: stdout_services() == set(SERVICES) or None, timeout=5, what="lines from all four")
    assert stdout_services() == set(SERVICES)
    access = shop.logs(trace_id=trace_id, message="request")
    assert {"route", "status", "duration_ms", "span_id", "timestamp", "level", "logger"} <= set(access[0])

    otlp_services = poll_until(
        lambda: (
            {r.service for r in otlp.logs_of(trace_id)} == set(SERVICES) and {r.service for r in otlp.logs_of(trace_id)}
        ),
        what="OTLP log records from all four services",
    )
    assert otlp_services == set(SERVICES)
    record = next(r for r in otlp.logs_of(trace_id) if r.body == "order_paid")
    assert record.attributes["order_id"] == placed["order_id"] and record.span_id


def test_the_request_is_in_metrics_with_a_trace_exemplar(shop, placed):
    text = requests.get(shop.url("checkout", "/metrics")).text
    assert re.search(r'http_request_duration_seconds_count\{[^}]*method="POST"[^}]*route="/orders"', text)
    assert "# {" not in text  # plain Prometheus text has no exemplars

    openmetrics = requests.get(shop.url("checkout", "/metrics"), headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    exemplars = re.findall(
        r'http_request_duration_seconds_bucket\{[^}]*method="POST"[^}]*route="/orders"[^}]*\} \S+ '
        r'# \{trace_id="(\w+)"\}',
        openmetrics.text,
    )
    assert placed["trace_id"] in exemplars


def test_no_card_number_or_token_reaches_logs_spans_or_metrics(shop, otlp, placed):
    exported = b"".join(otlp.raw_payloads)
    printed = shop.stdout_path.read_bytes()
    scraped = b"".join(requests.get(shop.url(s, "/metrics")).content for s in SERVICES)
    for secret in (GOOD_CARD["number"].encode(), placed["token"].encode()):
        assert secret not in exported and secret not in printed and secret not in scraped
    # No card object is ever dumped: no "cvc" in any exported text. Searched in the decoded text, not the raw
    # protobuf, where three random bytes of some trace id may spell it once the suite has sent enough spans.
    texts = [repr((s.name, s.attributes)) for s in otlp.spans] + [repr((r.body, r.attributes)) for r in otlp.logs]
    assert not [text for text in texts if "cvc" in text]
    assert b"cvc" not in printed and b"cvc" not in scraped


@pytest.mark.integration
def test_an_unreachable_otlp_endpoint_costs_no_request_and_every_loss_is_counted(tmp_path):
    """Export failures and, once the small queue is full, the spans and records dropped before export."""
    (closed_port,) = free_ports(1)
    env = exporting_to(
        f"http://127.0.0.1:{closed_port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_MAX_QUEUE_SIZE="8",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
        OTEL_BLRP_MAX_QUEUE_SIZE="8",
        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="4",
    )
    shop = ShopUnderTest(tmp_path, env, services=("catalog",)).start()
    try:

        def counted(series: str) -> float:
            text = requests.get(shop.url("catalog", "/metrics"), timeout=5).text
            match = re.search(re.escape(series) + r" (\S+)", text)
            return float(match.group(1)) if match else 0.0

        def dropped(signal: str) -> float:
            return counted(f'telemetry_dropped_items_total{{reason="queue_full",service="catalog",signal="{signal}"}}')

        # Requests in rounds until both queues have overflowed: how many it takes depends on how fast the exporters
        # give up on the closed port, which a loaded machine changes; that every request is served does not.
        statuses: list[int] = []
        for _round in range(20):
            statuses += [
                requests.get(shop.url("catalog", f"/products/{n}"), timeout=5).status_code for n in range(1, 21)
            ]
            if dropped("traces") > 0 and dropped("logs") > 0:
                break
        assert statuses == [200] * len(statuses)

        poll_until(
            lambda: counted('telemetry_exported_items_total{outcome="failure",service="catalog",signal="traces"}') > 0,
            timeout=30,
            what="the exporter to report failed exports",
        )
        for signal in ("traces", "logs"):
            assert dropped(signal) > 0, f"no {signal} counted as dropped after {len(statuses)} requests"
            assert counted(f'telemetry_queued_items{{service="catalog",signal="{signal}"}}') <= 8
    finally:
        assert shop.stop() == 0


SECRET_QUERY = "access_token=SECRET-ACCESS-TOKEN&card=4111111111111111&cvc=123&page=2"
REDACTED_QUERY = "access_token=REDACTED&card=REDACTED&cvc=REDACTED&page=2"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"/products?{SECRET_QUERY}", f"/products?{REDACTED_QUERY}"),
        (SECRET_QUERY, REDACTED_QUERY),  # url.query, without its "?"
        (
            "http://127.0.0.1:8083/pay?Password=p&API%5FKEY=k&q=kettle",
            "http://127.0.0.1:8083/pay?Password=REDACTED&API%5FKEY=REDACTED&q=kettle",
        ),
        ("GET /x?session_id=s;number=4 HTTP/1.1", "GET /x?session_id=REDACTED;number=REDACTED HTTP/1.1"),
        ("/products?q=kettle&limit=5", "/products?q=kettle&limit=5"),
        ("Invalid request from ip=127.0.0.1", "Invalid request from ip=127.0.0.1"),
    ],
)
def test_sensitive_query_values_are_redacted_and_the_rest_kept(text, redacted):
    assert redact_query(text) == redacted


def test_url_attributes_are_redacted_on_every_span_as_it_starts():
    """Server spans (http.target, url.query) and client spans (http.url; url.full from other instrumentations)."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(QueryRedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    attributes = {
        "http.target": f"/products?{SECRET_QUERY}",
        "url.query": SECRET_QUERY,
        "http.url": f"http://127.0.0.1:8081/products?{SECRET_QUERY}",
        "url.full": f"http://127.0.0.1:8081/products?{SECRET_QUERY}",
        "http.route": "/products",
    }
    provider.get_tracer("test").start_span("GET /products", attributes=attributes).end()
    (span,) = exported.get_finished_spans()
    assert dict(span.attributes or {}) == {
        "http.target": f"/products?{REDACTED_QUERY}",
        "url.query": REDACTED_QUERY,
        "http.url": f"http://127.0.0.1:8081/products?{REDACTED_QUERY}",
        "url.full": f"http://127.0.0.1:8081/products?{REDACTED_QUERY}",
        "http.route": "/products",
    }


def test_a_logged_url_loses_its_secrets_before_any_handler_writes_it():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(QueryRedactingLogFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("Error handling request %s %s", "GET", f"/products?{SECRET_QUERY}")
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == [f"Error handling request GET /products?{REDACTED_QUERY}"]


@pytest.mark.integration
def test_secrets_in_a_query_string_reach_no_span_or_log_record(tmp_path):
    receiver = OtlpReceiver().start()
    env = exporting_to(receiver.endpoint, SEED_PRODUCTS="30")
    shop = ShopUnderTest(tmp_path, env, services=("catalog",)).start()
    try:
        assert requests.get(shop.url("catalog", f"/products?{SECRET_QUERY}"), timeout=5).status_code == 200
        (line,) = poll_until(lambda: shop.logs(message="request", path="/products"), what="the access line")
        server = poll_until(
            lambda: [s for s in receiver.spans_of(line["trace_id"]) if s.kind == SERVER], what="the server span"
        )
        poll_until(lambda: receiver.logs_of(line["trace_id"]), what="the access line's OTLP record")
    finally:
        assert shop.stop() == 0
        receiver.stop()
    # The query is still there to read, its secrets are not (so this test cannot pass on a span without a query).
    assert server[0].attributes["http.target"] == f"/products?{REDACTED_QUERY}"
    texts = [repr((s.name, s.attributes)) for s in receiver.spans] + [
        repr((r.body, r.attributes)) for r in receiver.logs
    ]
    printed = shop.stdout_path.read_text()
    for secret in ("SECRET-ACCESS-TOKEN", "4111111111111111", "cvc=123"):
        assert not [text for text in texts if secret in text] and secret not in printed
    assert b"SECRET-ACCESS-TOKEN" not in b"".join(receiver.raw_payloads)


class BlackHole:
    """An OTLP endpoint that accepts connections and never answers: what a hung collector looks like."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return  # closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the thread (close alone does not)
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.mark.integration
def test_a_graceful_stop_is_quick_while_the_otlp_endpoint_hangs(tmp_path):
    """The last flush gives up after SHUTDOWN_TIMEOUT_S (2 s): stopping took 12.5 s, an export call waiting out
    OTEL_EXPORTER_OTLP_TIMEOUT (10 s) per signal. 5 s leaves room for gunicorn's own stop on a busy machine."""
    hole = BlackHole()
    env = exporting_to(hole.endpoint, SEED_PRODUCTS="30")
    shop = ShopUnderTest(tmp_path, env, services=("catalog",)).start()
    try:
        for product in range(1, 6):
            assert requests.get(shop.url("catalog", f"/products/{product}"), timeout=5).status_code == 200
        poll_until(lambda: hole.held, what="an export to be waiting on the endpoint")
    finally:
        started = time.monotonic()
        code = shop.stop()
        took = time.monotonic() - started
        hole.close()
    assert code == 0 and took < 5, f"exit code {code} after {took:.1f} s"


def test_server_spans_are_named_by_route_continue_the_callers_trace_and_fail_only_on_5xx():
    """shoplib's own server spans (traced_wsgi, in place of the Flask instrumentation), on a real Flask app."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(QueryRedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    app = Flask("traced")

    @app.get("/products/<int:product_id>")
    def product(product_id: int) -> dict[str, int]:
        return {"id": product_id}

    @app.get("/boom")
    def boom() -> tuple[str, int]:
        return "down", 503

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    app.wsgi_app = traced_wsgi(app.wsgi_app, provider.get_tracer("test"))  # type: ignore[method-assign]
    app.before_request_funcs.setdefault(None, []).insert(0, name_server_span)
    client = app.test_client()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert client.get(f"/products/7?{SECRET_QUERY}", headers={"traceparent": caller}).status_code == 200
    assert client.get("/products/x").status_code == 404
    assert client.get("/boom").status_code == 503
    assert client.get("/healthz").status_code == 200

    found, missing, failed = exported.get_finished_spans()  # /healthz has none
    assert (found.name, found.kind, found.status.status_code) == (
        "GET /products/<int:product_id>",
        SpanKind.SERVER,
        StatusCode.UNSET,
    )
    assert format(found.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(found.parent.span_id, "016x") == "b7ad6b7169203331"
    assert found.attributes["http.route"] == "/products/<int:product_id>"
    assert found.attributes["http.status_code"] == 200
    assert found.attributes["http.target"] == f"/products/7?{REDACTED_QUERY}"
    # No route matched: the method alone (a path would make a span name per URL); a 4xx is not the server's error.
    assert (missing.name, missing.status.status_code, missing.attributes["http.status_code"]) == (
        "GET",
        StatusCode.UNSET,
        404,
    )
    assert (failed.name, failed.status.status_code) == ("GET /boom", StatusCode.ERROR)
