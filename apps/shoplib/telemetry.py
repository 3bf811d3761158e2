"""OpenTelemetry set-up, driven by the standard OTEL_* environment variables.

The SDK is configured through opentelemetry-distro's configurator, so every OTEL_* variable the SDK
documents applies. It starts threads, so it runs once per process inside the gunicorn worker (the app
is not preloaded in the master), never before a fork. Exports run on background threads with bounded
queues: an unreachable endpoint drops telemetry, never fails a request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from flask import Flask
from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .metrics import TELEMETRY_EXPORTED

# Infrastructure endpoints are scraped every few seconds; tracing them would drown the shop's traces.
UNTRACED_URLS = "healthz,readyz,metrics"

# Defaults chosen for this lab; any of them can be overridden by setting the variable.
OTEL_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",  # Prometheus scrapes /metrics instead
    "OTEL_LOGS_EXPORTER": "none",  # stdout JSON always; OTLP logs when set to otlp
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # Loki's OTLP endpoint speaks HTTP only
}

_lock = threading.Lock()
_configured_service: str | None = None


class CountingExporter:
    """Wraps a span or log exporter and counts what each export call achieved."""

    def __init__(self, inner: Any, service: str, signal: str) -> None:
        self._inner = inner
        self._service = service
        self._signal = signal
        for outcome in ("success", "failure"):  # both series exist from the start, at 0
            TELEMETRY_EXPORTED.labels(service, signal, outcome)

    def export(self, batch: Sequence[Any]) -> Any:
        result = self._inner.export(batch)
        TELEMETRY_EXPORTED.labels(self._service, self._signal, result.name.lower()).inc(len(batch))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self._inner, "force_flush", None)
        return flush(timeout_millis) if flush else True


def _otel_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def configure_telemetry(service: str) -> None:
    """Create the process's tracer and logger providers once; later calls only check the service name."""
    global _configured_service
    with _lock:
        if _configured_service is not None:
            if _configured_service != service:
                raise RuntimeError(f"telemetry already configured for {_configured_service}, not {service}")
            return
        _configured_service = service
        RequestsInstrumentor().instrument()
        if not _otel_enabled():
            return
        for name, value in OTEL_DEFAULTS.items():
            os.environ.setdefault(name, value)
        OpenTelemetryConfigurator().configure(
            resource_attributes={"service.name": service, "service.namespace": "shop"},
            export_span_processor=lambda exporter: BatchSpanProcessor(CountingExporter(exporter, service, "traces")),
            export_log_record_processor=lambda exporter: BatchLogRecordProcessor(
                CountingExporter(exporter, service, "logs")
            ),
        )
        if os.environ["OTEL_LOGS_EXPORTER"].strip().lower() != "none":
            handler = LoggingHandler(logger_provider=get_logger_provider())
            # The exporter's own warnings about a down endpoint must not feed back into that endpoint.
            handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
            logging.getLogger().addHandler(handler)


def instrument_app(app: Flask) -> None:
    FlaskInstrumentor().instrument_app(app, excluded_urls=UNTRACED_URLS)


def shutdown_telemetry() -> None:
    """Flush and stop exporters (gunicorn's worker_exit calls this on graceful shutdown)."""
    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
