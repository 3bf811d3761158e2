"""A test double for an OTLP/HTTP endpoint: it decodes what the services export and keeps it in memory.

It stands in for Tempo (traces) and Loki (logs) in tests only; it checks what the shop sends, not what
those backends would do with it.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class LogRecord:
    service: str
    body: Any
    severity: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    timestamp_ns: int = 0
    resource: dict[str, Any] = field(default_factory=dict)


class OtlpReceiver:
    """Listens on 127.0.0.1:<free port>; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.logs: list[LogRecord] = []
        self.raw_payloads: list[bytes] = []
        # Body bytes as they came over the wire (before any gunzip), by path: what exporting costs the network.
        self.received_bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._port = self._server.server_address[1]
        self._closed = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> OtlpReceiver:
        """Listen; after `stop`, again on the same port (a backend coming back after an outage)."""
        if self._closed:
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._closed = False
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused, as by a stopped backend."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._closed = True

    def spans_of(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def logs_of(self, trace_id: str) -> list[LogRecord]:
        with self._lock:
            return [record for record in self.logs if record.trace_id == trace_id]

    def _store_traces(self, payload: bytes) -> bytes:
        request = ExportTraceServiceRequest.FromString(payload)
        spans: list[Span] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                spans.extend(
                    Span(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        status_code=span.status.code,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                    )
                    for span in scope_spans.spans
                )
        with self._lock:
            self.spans.extend(spans)
            self.raw_payloads.append(payload)
        return bytes(ExportTraceServiceResponse().SerializeToString())

    def _store_logs(self, payload: bytes) -> bytes:
        request = ExportLogsServiceRequest.FromString(payload)
        records: list[LogRecord] = []
        for resource_logs in request.resource_logs:
            resource = _attributes(resource_logs.resource.attributes)
            service = resource.get("service.name", "")
            for scope_logs in resource_logs.scope_logs:
                records.extend(
                    LogRecord(
                        service=service,
                        body=_value(record.body),
                        severity=record.severity_text,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        attributes=_attributes(record.attributes),
                        timestamp_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        resource=resource,
                    )
                    for record in scope_logs.log_records
                )
        with self._lock:
            self.logs.extend(records)
            self.raw_payloads.append(payload)
        return bytes(ExportLogsServiceResponse().SerializeToString())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        routes = {"/v1/traces": self._store_traces, "/v1/logs": self._store_logs}
        received, lock = self.received_bytes, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received[self.path] = received.get(self.path, 0) + len(payload)
                if self.headers.get("Content-Encoding") == "gzip":
                    payload = gzip.decompress(payload)
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                answer = route(payload)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler
