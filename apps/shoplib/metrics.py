"""Metrics every service exposes the same way, and the /metrics exposition.

Labels are bounded: route is the URL rule template, never the raw path; ids never become labels.
"""

from __future__ import annotations

from flask import Response, has_request_context, request
from opentelemetry import trace
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request, by route template, status code and the release (version) that served it.",
    ["service", "method", "route", "status_code", "version"],
    unit="seconds",
)
HTTP_REJECTED_REQUESTS = Counter(
    "http_rejected_requests",
    "HTTP requests gunicorn refused before the app saw them (malformed, or over its size limits), by status code.",
    ["service", "status_code"],
)
HTTP_REQUESTS_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being served right now.", ["service"])
DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds",
    "Time to run one SQLite statement and fetch its rows, by named operation.",
    ["service", "operation"],
    unit="seconds",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FAULT_ACTIVE = Gauge(
    "shop_fault_active", "1 while the named fault is injected into the service, else 0.", ["service", "fault"]
)
RELEASE_INFO = Gauge(
    "shop_release_info",
    "1 for each release serving the service: track is stable, or canary for the share of requests it serves.",
    ["service", "version", "track"],
)
TELEMETRY_EXPORTED = Counter(
    "telemetry_exported_items_total",
    "Spans and log records handed to the OTLP exporter, by signal and export outcome.",
    ["service", "signal", "outcome"],
)

TELEMETRY_DROPPED = Counter(
    "telemetry_dropped_items_total",
    "Spans and log records the shop dropped before export: its queue was full (the backend too slow or away), or "
    "they came after shutdown.",
    ["service", "signal", "reason"],
)
TELEMETRY_QUEUED = Gauge(
    "telemetry_queued_items", "Spans and log records waiting in the shop's export queue.", ["service", "signal"]
)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_route() -> tuple[str, str]:
    """(method, route template) of the request being served, as the route label records them; a call made
    outside any request (a background job) is ("", "none")."""
    if not has_request_context():
        return "", "none"
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    return method, request.url_rule.rule if request.url_rule is not None else "unmatched"


def trace_exemplar() -> dict[str, str] | None:
    """The current trace id as an exemplar, when the request is being traced."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def exposition() -> Response:
    """Prometheus text by default; OpenMetrics (which carries exemplars) when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(REGISTRY), content_type=content_type)
