"""OTLP's protobuf bytes for a batch of spans or log records, written directly.

The OTLP exporters build a protobuf message object for every span, attribute and value, then serialise it: about
110 µs a span here (opentelemetry-exporter-otlp-proto-common 1.45.1, upb), on the shop's own CPU, and more than any
other single step of its telemetry (bench/overhead.py). These functions write the same messages' bytes in one pass,
caching what repeats (the resource, the scope, attribute keys): the receiver decodes exactly the message the
exporter would have sent (tests/test_otlp_wire.py compares them on generated spans and records). Field numbers are
opentelemetry-proto's (opentelemetry/proto/{trace,logs,common,resource}/v1/*.proto).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

_logger = logging.getLogger(__name__)

# Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. A tag is (field number << 3) | wire type.
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_SPAN_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: what the SDK's encoder sets
_MAX_CACHED = 4096  # encoded attributes and scopes kept; each is a few dozen bytes


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64  # int64 and enums: two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or a message); `tag` is its one-byte key."""
    size = len(payload)
    return tag + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _value(value: Any) -> bytes:
    """An AnyValue message's bytes (a oneof: its field is written even when it holds a default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _value(value))


# Most attributes repeat exactly from span to span (http.method GET, db.statement, service.version): their whole
# field is kept, up to a bound, so a new value (a trace's own) never grows the cache past it.
_STRING_ATTRIBUTES: dict[tuple[bytes, str, str], bytes] = {}


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a KeyValue in field `tag`; one that cannot be encoded is logged and left out, as the SDK's
    encoder does."""
    if not attributes:
        return b""
    out = []
    cache = _STRING_ATTRIBUTES
    for key, value in attributes.items():
        if type(value) is str:
            encoded = cache.get((tag, key, value))
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if len(cache) < _MAX_CACHED:
                    cache[tag, key, value] = encoded
            out.append(encoded)
            continue
        try:
            out.append(_field(tag, _key_value(key, value)))
        except Exception:
            _logger.exception("Failed to encode key %s", key)
    return b"".join(out)


def _uint(tag: bytes, value: int | None) -> bytes:
    return tag + _varint(value) if value else b""


def _string(tag: bytes, value: str | None) -> bytes:
    return _field(tag, value.encode()) if value else b""


# Each resource and scope is encoded once per process, not once per batch. A resource is known by identity (the SDK
# shares one per provider; hashing a Resource serialises its attributes as JSON), a scope by its equality.
_RESOURCES: dict[int, tuple[Resource, bytes]] = {}
_SCOPES: dict[InstrumentationScope | None, bytes] = {}


def _resource(resource: Resource) -> bytes:
    cached = _RESOURCES.get(id(resource))
    if cached is None or cached[0] is not resource:
        cached = (resource, _attributes(b"\x0a", resource.attributes))
        if len(_RESOURCES) < _MAX_CACHED:
            _RESOURCES[id(resource)] = cached  # held, so its id is not reused while cached
    return cached[1]


def _scope(scope: InstrumentationScope | None) -> bytes:
    encoded = _SCOPES.get(scope)
    if encoded is None:
        encoded = b""
        if scope is not None:
            encoded = (
                _string(b"\x0a", scope.name) + _string(b"\x12", scope.version) + _attributes(b"\x1a", scope.attributes)
            )
        if len(_SCOPES) < _MAX_CACHED:
            _SCOPES[scope] = encoded
    return encoded


def _request(items: Sequence[Any], encode: Callable[[Any], bytes]) -> bytes:
    """ExportTraceServiceRequest or ExportLogsServiceRequest (the same shape: resource > scope > items), grouped by
    resource, then by scope, in the order first met, as the SDK's encoders do."""
    groups: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
    for item in items:
        resource = item.resource
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(item.instrumentation_scope or None, []).append(_field(b"\x12", encode(item)))
    out = []
    for resource, scopes in groups.values():
        scope_parts = b"".join(
            _field(
                b"\x12",
                _field(b"\x0a", _scope(scope))
                + b"".join(encoded)
                + _string(b"\x1a", scope.schema_url if scope else None),
            )
            for scope, encoded in scopes.items()
        )
        body = _field(b"\x0a", _resource(resource)) + scope_parts + _string(b"\x1a", resource.schema_url)
        out.append(_field(b"\x0a", body))
    return b"".join(out)


def _flags(parent: SpanContext | None) -> bytes:
    return b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else 0x100)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # the SDK's spans always have one
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    if span.parent is not None:
        parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
    parts.append(_string(b"\x2a", span.name))
    parts.append(b"\x30" + _varint(_SPAN_KIND[span.kind]))
    if span.start_time:
        parts.append(b"\x39" + _FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    parts.append(_uint(b"\x50", span.dropped_attributes))
    for event in span.events:
        encoded = (
            (b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
            + _string(b"\x12", event.name)
            + _attributes(b"\x1a", event.attributes)
            + _uint(b"\x20", event.dropped_attributes)
        )
        parts.append(_field(b"\x5a", encoded))
    parts.append(_uint(b"\x60", span.dropped_events))
    for link in span.links:
        encoded = (
            b"\x0a\x10"
            + link.context.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + link.context.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes)
            + _uint(b"\x28", link.dropped_attributes)
            + b"\x35"
            + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE if link.context.is_remote else _HAS_IS_REMOTE)
        )
        parts.append(_field(b"\x6a", encoded))
    parts.append(_uint(b"\x70", span.dropped_links))
    status = span.status
    parts.append(_field(b"\x7a", _string(b"\x12", status.description) + _uint(b"\x18", status.status_code.value)))
    parts.append(_flags(span.parent))
    return b"".join(parts)


def _log_record(readable: ReadableLogRecord) -> bytes:
    record = readable.log_record
    severity = getattr(record.severity_number, "value", None)
    return b"".join(
        (
            b"\x09" + _FIXED64(record.timestamp) if record.timestamp else b"",
            _uint(b"\x10", severity),
            _string(b"\x1a", record.severity_text),
            _field(b"\x2a", _value(record.body)),
            _attributes(b"\x32", record.attributes),
            _uint(b"\x38", readable.dropped_attributes),
            b"\x45" + _FIXED32(int(record.trace_flags)) if record.trace_flags else b"",
            b"\x4a\x10" + record.trace_id.to_bytes(16, "big") if record.trace_id else b"",
            b"\x52\x08" + record.span_id.to_bytes(8, "big") if record.span_id else b"",
            b"\x59" + _FIXED64(record.observed_timestamp) if record.observed_timestamp else b"",
            _string(b"\x62", record.event_name),
        )
    )


class Encoded:
    """Bytes standing where the exporters expect a protobuf message: they only serialise it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    SerializePartialToString = SerializeToString


def encode_spans(spans: Sequence[ReadableSpan]) -> Encoded:
    """An ExportTraceServiceRequest of `spans`, as opentelemetry-exporter-otlp-proto-common's encode_spans."""
    return Encoded(_request(spans, _span))


def encode_logs(records: Sequence[ReadableLogRecord]) -> Encoded:
    """An ExportLogsServiceRequest of `records`, as opentelemetry-exporter-otlp-proto-common's encode_logs."""
    return Encoded(_request(records, _log_record))
