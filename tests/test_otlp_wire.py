"""shoplib.otlp_wire writes the very messages the OTLP exporters would: decoded, they equal what
opentelemetry-exporter-otlp-proto-common's encoders build, for spans and log records hypothesis makes up."""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import _log_exporter, trace_exporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from otlp_receiver import OtlpReceiver
from shoplib import otlp_wire
from shoplib.telemetry import encode_directly

KEYS = st.text(min_size=1, max_size=12)
SCALARS = st.one_of(
    st.text(max_size=40),  # "" included: a oneof holding a default is still set
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(st.text(max_size=8), max_size=4),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=3),
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=6)
IDS = st.integers(min_value=1, max_value=2**64 - 1)

SPAN = st.fixed_dictionaries(
    {
        "name": st.text(max_size=30),
        "kind": st.sampled_from(list(SpanKind)),
        "attributes": ATTRIBUTES,
        "parent": st.none() | st.tuples(st.integers(min_value=1, max_value=2**128 - 1), IDS, st.booleans()),
        "events": st.lists(st.tuples(st.text(max_size=10), ATTRIBUTES), max_size=2),
        "links": st.lists(st.tuples(IDS, st.booleans(), ATTRIBUTES), max_size=2),
        "status": st.sampled_from([None, (StatusCode.OK, None), (StatusCode.ERROR, "boom"), (StatusCode.ERROR, None)]),
        "scope": st.sampled_from([("shop", None), ("shop", "1.0"), ("other", None)]),
    }
)


def made_spans(specs: list[dict[str, Any]]) -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "catalog", "service.namespace": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for spec in specs:
        context = None
        if spec["parent"]:
            trace_id, span_id, remote = spec["parent"]
            parent = SpanContext(trace_id, span_id, remote, TraceFlags(TraceFlags.SAMPLED))
            context = set_span_in_context(NonRecordingSpan(parent))
        links = [
            Link(SpanContext(span_id, span_id, remote, TraceFlags(TraceFlags.SAMPLED)), attributes)
            for span_id, remote, attributes in spec["links"]
        ]
        tracer = provider.get_tracer(*spec["scope"])
        span = tracer.start_span(spec["name"], context, spec["kind"], spec["attributes"], links)
        for name, attributes in spec["events"]:
            span.add_event(name, attributes)
        if spec["status"]:
            span.set_status(Status(*spec["status"]))
        span.end()
    provider.shutdown()
    return exporter.get_finished_spans()


@settings(max_examples=150, deadline=None)
@given(st.lists(SPAN, max_size=6))
def test_spans_decode_to_the_message_the_sdk_encoder_builds(specs):
    spans = made_spans(specs)
    written = otlp_wire.encode_spans(spans).SerializePartialToString()
    assert ExportTraceServiceRequest.FromString(written) == encode_spans(spans)


RECORD = st.fixed_dictionaries(
    {
        "body": st.none() | st.text(max_size=30) | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "severity": st.sampled_from([None, SeverityNumber.INFO, SeverityNumber.ERROR]),
        "severity_text": st.none() | st.sampled_from(["INFO", "ERROR"]),
        "attributes": ATTRIBUTES,
        "trace": st.none() | st.tuples(st.integers(min_value=1, max_value=2**128 - 1), IDS),
        "event_name": st.none() | st.text(max_size=10),
        "timestamp": st.none() | st.integers(min_value=1, max_value=2**63),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.lists(RECORD, max_size=6))
def test_log_records_decode_to_the_message_the_sdk_encoder_builds(specs):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.access")
    for spec in specs:
        trace_id, span_id = spec["trace"] or (0, 0)
        logger.emit(
            LogRecord(
                timestamp=spec["timestamp"],
                trace_id=trace_id,
                span_id=span_id,
                trace_flags=TraceFlags(TraceFlags.SAMPLED) if spec["trace"] else None,
                severity_text=spec["severity_text"],
                severity_number=spec["severity"],
                body=spec["body"],
                attributes=spec["attributes"],
                event_name=spec["event_name"],
            )
        )
    records = exporter.get_finished_logs()
    written = otlp_wire.encode_logs(records).SerializeToString()
    assert ExportLogsServiceRequest.FromString(written) == encode_logs(records)


def test_a_record_from_the_logging_handler_with_an_exception_encodes_alike():
    """What the shop actually emits: stdlib records through the SDK's handler, an exception's attributes included."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "payment"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("test.otlp_wire")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        logger.warning("request", extra={"route": "/payments", "status": 402, "duration_ms": 3.25})
        try:
            raise ValueError("declined")
        except ValueError:
            logger.exception("payment failed")
    finally:
        logger.removeHandler(handler)
    records = exporter.get_finished_logs()
    assert len(records) == 2
    written = otlp_wire.encode_logs(records).SerializeToString()
    assert ExportLogsServiceRequest.FromString(written) == encode_logs(records)


def test_the_otlp_http_exporters_send_what_otlp_wire_writes(monkeypatch):
    """The seam: after encode_directly, the OTLP/HTTP exporters' bodies come from otlp_wire (counted), over real
    HTTP to the tests' receiver, which decodes them."""
    written: list[bytes] = []
    write = otlp_wire._request

    def counted(items: Any, encode: Any) -> bytes:
        written.append(write(items, encode))
        return written[-1]

    monkeypatch.setattr(otlp_wire, "_request", counted)
    monkeypatch.setattr(trace_exporter, "encode_spans", trace_exporter.encode_spans)  # undone after the test
    monkeypatch.setattr(_log_exporter, "encode_logs", _log_exporter.encode_logs)
    encode_directly()
    receiver = OtlpReceiver().start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        exporter = trace_exporter.OTLPSpanExporter(f"{receiver.endpoint}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("shop").start_as_current_span("POST /orders", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.status_code", 201)
        logs = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
        logs.add_log_record_processor(
            SimpleLogRecordProcessor(_log_exporter.OTLPLogExporter(f"{receiver.endpoint}/v1/logs"))
        )
        logs.get_logger("shop.access").emit(LogRecord(body="request", severity_number=SeverityNumber.INFO))
        provider.shutdown()
        logs.shutdown()
    finally:
        receiver.stop()
    assert len(written) == 2  # one body of spans, one of log records
    ((server,), (record,)) = receiver.spans, receiver.logs
    assert (server.service, server.name, server.attributes) == ("checkout", "POST /orders", {"http.status_code": 201})
    assert record.body == "request"
