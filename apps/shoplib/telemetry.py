"""OpenTelemetry set-up, driven by the standard OTEL_* environment variables.

The SDK is configured through opentelemetry-distro's configurator, so every OTEL_* variable the SDK
documents applies. It starts threads, so it runs once per process in gunicorn's post_fork hook (see
shoplib.serve), never before a fork. Exports run on background threads with bounded
queues: an unreachable endpoint drops telemetry, never fails a request.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from flask import Flask, request
from opentelemetry import context, propagate, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY as _SUPPRESS_HTTP
from opentelemetry.context import Context
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.exporter.otlp.proto.http import _log_exporter, trace_exporter
from opentelemetry.instrumentation.utils import http_status_to_status_code, is_http_instrumentation_enabled
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.metrics import (
    CallbackOptions,
    CallbackT,
    Counter,
    Meter,
    NoOpCounter,
    NoOpMeter,
    NoOpMeterProvider,
    ObservableUpDownCounter,
)
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import detect_synthetic_user_agent, normalize_user_agent, redact_url, sanitize_method
from requests import PreparedRequest, Response, Session

from . import otlp_wire
from .log_records import RecordingLogHandler
from .metrics import TELEMETRY_DROPPED, TELEMETRY_EXPORTED, TELEMETRY_QUEUED
from .releases import ReleaseLogFilter, ReleaseSpanProcessor
from .spans import record_lightly

# Graceful shutdown's last flush of spans and records, at most (both at once). Without a bound an endpoint that
# accepts and never answers holds the worker for OTEL_EXPORTER_OTLP_TIMEOUT (10 s) per signal, past gunicorn's
# graceful_timeout; whatever has not left by then is lost, as it would be in a crash.
SHUTDOWN_TIMEOUT_S = 2.0

# Infrastructure endpoints are scraped every few seconds; tracing them would drown the shop's traces.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Defaults chosen for this lab; any of them can be overridden by setting the variable.
OTEL_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",  # Prometheus scrapes /metrics instead
    "OTEL_LOGS_EXPORTER": "none",  # stdout JSON always; OTLP logs when set to otlp
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # Loki's OTLP endpoint speaks HTTP only
}
# The SDK's one switch for its internal metrics. The batch processors count what they drop (and show their queue)
# only with it on: they get it while they are built (see _ProcessorMetricsToPrometheus for where the counts go).
# The tracer and logger providers read it too, then count every span and record started and ended, about 0.1 ms of
# CPU a span that no one reads (bench/overhead.py): they are built with it off.
INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"


# A query parameter whose name contains one of these words (any case) is a credential or card data a client put in a
# URL: its value never leaves the process. Redacting a harmless `keyword=` too is the safe side of the trade.
SENSITIVE_PARAMETER = re.compile(r"token|passw|secret|key|card|cvc|cvv|number|auth|session|signature|credential")
REDACTED = "REDACTED"
# name=value at the start or after a `?`, `&` or `;`: a query string (url.query), a URL, a target or a request line in
# a log message.
_PARAMETER = re.compile(r"(^|[?&;])([^=&;?#\s]+)=([^&;#\s]*)")
# Where HTTP spans put the URL: the shop's server and client spans (traced_wsgi, traced_send) the old semantic
# conventions, other instrumentations the stable ones too (OTEL_SEMCONV_STABILITY_OPT_IN=http).
URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.query")


def redact_query(text: str) -> str:
    """`text` with the value of every sensitive query parameter (SENSITIVE_PARAMETER) replaced by REDACTED; the
    names and the other parameters stay, so a trace still shows what the client sent and where to fix it."""

    def redact(match: re.Match[str]) -> str:
        name = unquote_plus(match[2]).lower()  # access%5Ftoken is access_token too
        if SENSITIVE_PARAMETER.search(name):
            return f"{match[1]}{match[2]}={REDACTED}"
        return match[0]

    return _PARAMETER.sub(redact, text) if "=" in text else text


def redact_url_attributes(span: Any) -> None:
    """Redact the sensitive query parameters in a span's URL attributes (URL_ATTRIBUTES), while it records."""
    attributes = getattr(span, "attributes", None) or {}
    for key in URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            redacted = redact_query(value)
            if redacted != value:
                span.set_attribute(key, redacted)


class QueryRedactingSpanProcessor(SpanProcessor):
    """Redacts the URL attributes of every span as it starts: the server spans (traced_wsgi) and the client spans
    (traced_send) set them at creation, so no span carries a secret to Tempo."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        redact_url_attributes(span)


class QueryRedactingLogFilter(logging.Filter):
    """Redacts sensitive query parameters in a record's message (a URL or request line that a library logs), for
    the stdout and the OTLP handlers alike. The shop's own lines carry the path only, never the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed format string: the handler reports it, a filter must not raise into the caller
        redacted = redact_query(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


Exporter = TypeVar("Exporter", SpanExporter, LogRecordExporter)


def counting(exporter: Exporter, service: str, signal: str) -> Exporter:
    """The same exporter, counting what each export call achieved in telemetry_exported_items_total."""
    series = {outcome: TELEMETRY_EXPORTED.labels(service, signal, outcome) for outcome in ("success", "failure")}
    export = exporter.export

    def export_and_count(batch: Any) -> Any:
        result = export(batch)
        series[result.name.lower()].inc(len(batch))
        return result

    setattr(exporter, "export", export_and_count)  # noqa: B010 - an instance attribute shadows the method
    return exporter


class _ProcessorMetricsToPrometheus(NoOpMeterProvider):
    """A meter provider only for the SDK's batch processors (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED): their
    count of dropped items and their queue length go to Prometheus. The SDK drops from a full queue with one log
    line at most; counted, a loss is visible on the telemetry dashboard and never silent."""

    def __init__(self, service: str, signal: str) -> None:
        self.meter = _ProcessorMeter(service, signal)

    def get_meter(self, *_args: Any, **_kwargs: Any) -> Meter:
        return self.meter


class _ProcessorMeter(NoOpMeter):
    def __init__(self, service: str, signal: str) -> None:
        super().__init__("opentelemetry-sdk")
        self.service, self.signal = service, signal
        for reason in ("queue_full", "already_shutdown"):  # the SDK's two; at 0 from the start, not absent
            TELEMETRY_DROPPED.labels(service, signal, reason)

    def create_counter(self, name: str, *_args: Any, **_kwargs: Any) -> Counter:
        service, signal = self.service, self.signal

        class Processed(NoOpCounter):
            def add(self, amount: float, attributes: Any = None, *_args: Any, **_kwargs: Any) -> None:
                reason = (attributes or {}).get("error.type")  # only dropped items carry one
                if reason:
                    TELEMETRY_DROPPED.labels(service, signal, str(reason)).inc(amount)

        return Processed(name)

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, *_args: Any, **_kwargs: Any
    ) -> ObservableUpDownCounter:
        for callback in callbacks or ():
            TELEMETRY_QUEUED.labels(self.service, self.signal).set_function(_observed(callback))
        return super().create_observable_up_down_counter(name, callbacks)


def _observed(callback: CallbackT) -> Callable[[], float]:
    """A gauge's function reading the SDK's observable callback (here: the queue's length)."""

    def read() -> float:
        observations = callback(CallbackOptions()) if callable(callback) else ()  # the SDK passes a function
        return float(sum(observation.value for observation in observations))

    return read


@contextmanager
def _internal_metrics() -> Iterator[None]:
    """INTERNAL_METRICS on while a batch processor is built, then as it was."""
    before = os.environ.get(INTERNAL_METRICS)
    os.environ[INTERNAL_METRICS] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[INTERNAL_METRICS]
        else:
            os.environ[INTERNAL_METRICS] = before


def _batch_span_processor(exporter: SpanExporter, service: str) -> BatchSpanProcessor:
    with _internal_metrics():
        return BatchSpanProcessor(
            counting(exporter, service, "traces"), meter_provider=_ProcessorMetricsToPrometheus(service, "traces")
        )


def _batch_log_record_processor(exporter: LogRecordExporter, service: str) -> BatchLogRecordProcessor:
    with _internal_metrics():
        return BatchLogRecordProcessor(
            counting(exporter, service, "logs"), meter_provider=_ProcessorMetricsToPrometheus(service, "logs")
        )


def encode_directly() -> None:
    """The OTLP/HTTP exporters write their bodies with shoplib.otlp_wire: the same bytes' meaning at a quarter of
    the CPU. They look their encoder up in their own module at each export, so that is where it is replaced."""
    setattr(trace_exporter, "encode_spans", otlp_wire.encode_spans)  # noqa: B010 - a module global, not exported
    setattr(_log_exporter, "encode_logs", otlp_wire.encode_logs)  # noqa: B010


def _otel_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def configure_telemetry(service: str) -> None:
    """Create this process's tracer and logger providers (gunicorn's post_fork calls it, once per worker). With
    OTEL_SDK_DISABLED=true nothing is instrumented either: the shop runs dark, as the overhead benchmark needs."""
    if not _otel_enabled():
        return
    trace_requests()
    for name, value in OTEL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.pop(INTERNAL_METRICS, None)  # see INTERNAL_METRICS: the providers are built without it
    encode_directly()
    OpenTelemetryConfigurator().configure(
        resource_attributes={"service.name": service, "service.namespace": "shop"},
        export_span_processor=lambda exporter: _batch_span_processor(exporter, service),
        export_log_record_processor=lambda exporter: _batch_log_record_processor(exporter, service),
    )
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        record_lightly(provider)
        # Both act on spans as they start; export happens at their end.
        provider.add_span_processor(ReleaseSpanProcessor())
        provider.add_span_processor(QueryRedactingSpanProcessor())
    if os.environ["OTEL_LOGS_EXPORTER"].strip().lower() != "none":
        handler = RecordingLogHandler(logger_provider=get_logger_provider())
        handler.addFilter(ReleaseLogFilter())
        handler.addFilter(QueryRedactingLogFilter())
        # The exporter's own warnings about a down endpoint must not feed back into that endpoint.
        handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
        logging.getLogger().addHandler(handler)


def instrument_app(app: Flask) -> None:
    """A SERVER span for each request the app serves (but UNTRACED_PATHS), in the context its caller propagated."""
    if _otel_enabled():
        app.wsgi_app = traced_wsgi(app.wsgi_app)  # type: ignore[method-assign]
        app.before_request_funcs.setdefault(None, []).insert(0, name_server_span)


def traced_wsgi(wsgi_app: Any, tracer: trace.Tracer | None = None) -> Any:
    """`wsgi_app` inside a SERVER span, from the first byte read to the response handed to the server.

    In place of opentelemetry-instrumentation-flask, which cost this shop more than all its other telemetry (bench/
    overhead.py): it gathered the request's attributes twice, rebuilt the request's URL three times to match its
    exclusions and set each attribute twice. This span has the attributes the dashboards, diagnosis and span
    metrics read (name `METHOD route`, kind, status, http.route, http.status_code), and what shows who called and
    how: http.method, http.scheme, http.target (redacted by QueryRedactingSpanProcessor), net.peer.ip,
    http.user_agent (the old HTTP semantic conventions, as the client spans of traced_send)."""
    tracer = tracer or trace.get_tracer(__name__)

    def traced(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in UNTRACED_PATHS:
            return wsgi_app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "")
        query = environ.get("QUERY_STRING")
        attributes = {
            "http.method": method,
            "http.scheme": environ.get("wsgi.url_scheme", "http"),
            "http.target": f"{path}?{query}" if query else path,
            "net.peer.ip": environ.get("REMOTE_ADDR", ""),
            "http.user_agent": environ.get("HTTP_USER_AGENT", ""),
        }
        span = tracer.start_span(
            method, propagate.extract(environ, getter=wsgi_getter), kind=SpanKind.SERVER, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span))

        def recording_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = status.split(" ", 1)[0]
            if code.isdigit():
                span.set_attribute("http.status_code", int(code))
                if int(code) >= 500:  # a server span's 4xx is the client's error, not the span's (semconv)
                    span.set_status(StatusCode.ERROR)
            return start_response(status, headers, exc_info)

        try:
            return wsgi_app(environ, recording_status)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            context.detach(token)
            span.end()

    return traced


def trace_requests(tracer: trace.Tracer | None = None) -> None:
    """Every request that requests sends (Session.send, every session's) in a CLIENT span: traced_send."""
    if not getattr(Session.send, "traced_by_shop", False):
        setattr(Session, "send", traced_send(Session.send, tracer or trace.get_tracer(__name__)))  # noqa: B010


def traced_send(send: Callable[..., Response], tracer: trace.Tracer) -> Callable[..., Response]:
    """`send` (requests' Session.send) in a CLIENT span that carries the trace context to the service called. Calls
    made under suppress_instrumentation (readiness probes, the OTLP exporters' own posts) are sent untraced, and so
    are the redirects a call follows.

    In place of opentelemetry-instrumentation-requests, which added about 61 µs of CPU to a call against 37 for this
    span (README, "What telemetry costs", step 8): it parsed each URL three times, read its header-capture settings
    from the environment, timed each call for metrics nobody reads and went through context managers four deep.
    This is the span it recorded in the default semantic conventions (tests/test_client_spans.py compares both):
    name METHOD, http.method, http.url (credentials and signature parameters redacted by the same function,
    sensitive query parameters by QueryRedactingSpanProcessor), user_agent.original, http.status_code, ERROR from
    400 on or on an exception (recorded). Not kept: its OTEL_SEMCONV_STABILITY_OPT_IN,
    OTEL_PYTHON_REQUESTS_EXCLUDED_URLS and header-capture settings; the shop's server spans (traced_wsgi) write the
    same old conventions."""

    @functools.wraps(send)
    def traced(session: Session, request: PreparedRequest, **kwargs: Any) -> Response:
        if not is_http_instrumentation_enabled():
            return send(session, request, **kwargs)
        method = sanitize_method((request.method or "").strip())
        url = request.url or ""
        if "@" in url or "?" in url:  # redact_url changes nothing else, and parses every URL twice to find out
            url = redact_url(url)
        attributes = {"http.method": method, "http.url": url} if url else {"http.method": method}
        user_agent = normalize_user_agent(request.headers.get("User-Agent"))
        if user_agent:
            synthetic = detect_synthetic_user_agent(user_agent)
            if synthetic:
                attributes["user_agent.synthetic.type"] = synthetic
            attributes["user_agent.original"] = user_agent
        span = tracer.start_span("HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT, attributes=attributes)
        # The span is current for the propagator; the flag keeps redirects, sent from inside, from tracing again.
        token = context.attach(context.set_value(_SUPPRESS_HTTP, True, trace.set_span_in_context(span)))
        try:
            propagate.inject(request.headers)
            try:
                response = send(session, request, **kwargs)
            except Exception as error:
                _record_answer(span, getattr(error, "response", None))  # an HTTPError's, for one
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                raise
            _record_answer(span, response)
            return response
        finally:
            context.detach(token)
            span.end()

    traced.traced_by_shop = True  # type: ignore[attr-defined]
    return traced


def _record_answer(span: trace.Span, response: object) -> None:
    """A client span's status code and status: ERROR from 400 on (the call failed, whoever's fault it was)."""
    if isinstance(response, Response):
        span.set_attribute("http.status_code", response.status_code)
        span.set_status(Status(http_status_to_status_code(response.status_code)))


def name_server_span() -> None:
    """The span's name and http.route once Flask has matched the route (a request no route matches keeps its
    method alone as its name: a path would make one span name, and one span-metrics series, per URL)."""
    rule = request.url_rule
    if rule is not None:
        span = trace.get_current_span()
        span.update_name(f"{request.method} {rule.rule}")
        span.set_attribute("http.route", rule.rule)


def shutdown_telemetry(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Flush and stop the exporters, within `timeout_s` (gunicorn's worker_exit calls this on graceful shutdown).

    The SDK's shutdown waits up to 30 s for its worker, and force_flush ignores its timeout, so each provider shuts
    down on a daemon thread of its own and is waited for until the deadline; a thread still stuck on an endpoint
    that does not answer is abandoned when the process exits."""
    deadline = time.monotonic() + timeout_s
    threads = []
    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            thread = threading.Thread(target=shutdown, name=f"shutdown-{type(provider).__name__}", daemon=True)
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
