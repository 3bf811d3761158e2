"""shoplib.telemetry.traced_send records the CLIENT span that opentelemetry-instrumentation-requests recorded (the
library it replaced, kept as a test dependency for this comparison): the same calls, made up by hypothesis,
through both, give the same spans and carry the same trace context to the service called."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from requests.adapters import BaseAdapter

from shoplib.telemetry import traced_send
from test_spans import provider

# requests' own send, whoever wrapped it since (an in-process test may have configured the shop's telemetry).
UNTRACED_SEND = inspect.unwrap(requests.Session.send)

CALLS = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "post", "PUT", "DELETE", "PATCH", "BREW", ""]),
        "url": st.sampled_from(
            [
                "http://catalog:8080/reservations",
                "http://127.0.0.1:8083/payments?order=7",
                "http://shop:s3cret@payment:8080/payments",  # credentials: redacted
                "https://auth:8443/verify?Signature=abc&sig=1&sig=2&page=2",  # signatures: redacted
                "http://catalog:8080/products?api_token=s3cret",  # QueryRedactingSpanProcessor's part, not tested here
            ]
        ),
        "user_agent": st.sampled_from([None, "Googlebot/2.1", "alwayson-probe", "shoplab-responder/1.0"]),
        "answer": st.sampled_from([200, 204, 404, 409, 500, 503, "redirect", "refused", "timeout", "http-error"]),
        "parent": st.booleans(),
    }
)


# One plain call; a test sets its answer (and parent).
CALLS_EXAMPLE = {"method": "GET", "url": "http://catalog:8080/products", "user_agent": None, "parent": False}


class Scripted(BaseAdapter):
    """Answers as the call's script says, without a network; remembers the headers of every request sent."""

    def __init__(self, answer: int | str) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[dict[str, str]] = []

    def send(self, request: requests.PreparedRequest, *_args: Any, **_kwargs: Any) -> requests.Response:
        self.sent.append(dict(request.headers))
        if self.answer == "refused":
            raise requests.ConnectionError("connection refused")
        if self.answer == "timeout":
            raise requests.ReadTimeout("read timed out")
        response = requests.Response()
        response.request, response.url, response._content = request, request.url or "", b"{}"
        response.status_code = 200
        if self.answer == "redirect" and len(self.sent) == 1:
            response.status_code, response.headers["Location"] = 302, "/elsewhere"
        elif self.answer == "http-error":
            response.status_code = 502
            raise requests.HTTPError("502 Bad Gateway", response=response)
        elif isinstance(self.answer, int):
            response.status_code = self.answer
        return response

    def close(self) -> None:
        pass


@contextmanager
def untraced_requests() -> Iterator[None]:
    """requests' Session.send as requests defines it, for the duration."""
    before = requests.Session.send
    requests.Session.send = UNTRACED_SEND  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.send = before  # type: ignore[method-assign]


def call(session: requests.Session, made: TracerProvider, script: dict[str, Any]) -> Scripted:
    adapter = Scripted(script["answer"])
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if script["user_agent"] is None:
        del session.headers["User-Agent"]
    else:
        session.headers["User-Agent"] = script["user_agent"]
    parent = made.get_tracer("shop").start_span("POST /orders") if script["parent"] else trace.INVALID_SPAN
    # A failure is recorded on the span: what is compared.
    with trace.use_span(parent, end_on_exit=True), suppress(requests.RequestException):
        session.request(script["method"], script["url"], json={"order": 7}, timeout=1.0)
    return adapter


def described(span: ReadableSpan) -> dict[str, Any]:
    """What a span says, but its scope (the library's name and version) and the exception's stack, whose frames
    are each wrapper's own."""
    return {
        "name": span.name,
        "kind": span.kind,
        "context": span.context,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [
            (event.name, {k: v for k, v in (event.attributes or {}).items() if k != "exception.stacktrace"})
            for event in span.events
        ],
        "links": list(span.links),
    }


def with_library(script: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    made, exporter = provider(True, SpanLimits())
    instrumentor = RequestsInstrumentor()
    with untraced_requests():
        instrumentor.instrument(tracer_provider=made, meter_provider=NoOpMeterProvider())
        try:
            adapter = call(requests.Session(), made, script)
        finally:
            instrumentor.uninstrument()
    return [described(span) for span in exporter.get_finished_spans()], adapter.sent


def with_shop(script: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    made, exporter = provider(True, SpanLimits())

    class TracedSession(requests.Session):
        send = traced_send(UNTRACED_SEND, made.get_tracer("shoplib.telemetry"))

    adapter = call(TracedSession(), made, script)
    return [described(span) for span in exporter.get_finished_spans()], adapter.sent


@settings(max_examples=200, deadline=None)
@given(CALLS)
def test_the_shops_client_span_is_the_one_the_requests_instrumentation_recorded(script):
    spans, sent = with_shop(script)
    assert (spans, sent) == with_library(script)
    client = [span for span in spans if span["kind"] is SpanKind.CLIENT]
    assert len(client) == 1  # a redirect followed is part of the call, not a second span
    # The service called continues the trace from this span.
    trace_id, span_id = client[0]["context"].trace_id, client[0]["context"].span_id
    assert sent[0]["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-01"


def test_a_client_span_names_the_call_and_marks_failures():
    spans, _ = with_shop(
        {
            "method": "post",
            "url": "http://u:p@payment:8080/payments?Signature=x",
            "user_agent": None,
            "answer": 503,
            "parent": True,
        }
    )
    (client,) = [span for span in spans if span["kind"] is SpanKind.CLIENT]
    assert client["name"] == "POST"
    assert client["attributes"] == {
        "http.method": "POST",
        "http.url": "http://REDACTED:REDACTED@payment:8080/payments?Signature=REDACTED",
        "http.status_code": 503,
    }
    assert client["status"] == (StatusCode.ERROR, None)
    refused, _ = with_shop({**CALLS_EXAMPLE, "answer": "refused"})
    (client,) = [span for span in refused if span["kind"] is SpanKind.CLIENT]
    assert client["status"] == (StatusCode.ERROR, "ConnectionError: connection refused")
    assert [name for name, _ in client["events"]] == ["exception"]


def test_suppressed_calls_are_sent_without_a_span_or_trace_context():
    made, exporter = provider(True, SpanLimits())

    class TracedSession(requests.Session):
        send = traced_send(UNTRACED_SEND, made.get_tracer("shoplib.telemetry"))

    with suppress_instrumentation():
        adapter = call(TracedSession(), made, {**CALLS_EXAMPLE, "answer": 200, "parent": True})
    assert [span.name for span in exporter.get_finished_spans()] == ["POST /orders"]  # the caller's own span only
    assert "traceparent" not in adapter.sent[0]


@pytest.mark.parametrize("answer", [200, "refused"])
def test_the_span_ends_and_the_context_is_restored_either_way(answer):
    before = trace.get_current_span()
    spans, _ = with_shop({**CALLS_EXAMPLE, "answer": answer})
    assert trace.get_current_span() is before
    assert [span["name"] for span in spans] == ["GET"]
