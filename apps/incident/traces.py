"""Traces as Tempo returns them (OTLP JSON), and where their time goes: each span's self time."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_HEX = re.compile(r"[0-9a-fA-F]{1,32}")
_KINDS = {
    "SPAN_KIND_INTERNAL": "internal",
    "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client",
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
}


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    service: str
    name: str
    kind: str  # server, client, internal, producer or consumer
    start_ns: int
    end_ns: int
    error: bool
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def peer(self) -> str:
        """host:port a client span called ('' when it says nothing), to name a callee that never answered.
        The shop's client spans write the old `http.url`; newer instrumentations `url.full` or `server.*`."""
        url = self.attributes.get("url.full") or self.attributes.get("http.url")
        if url:
            return urlsplit(str(url)).netloc
        host = self.attributes.get("server.address") or self.attributes.get("net.peer.name")
        port = self.attributes.get("server.port") or self.attributes.get("net.peer.port")
        return f"{host}:{port}" if host else ""


def hex_id(raw: str, digits: int = 32) -> str:
    """A trace id (32 hex digits) or span id (16) as lower-case hex, whether it came as hex (Tempo's search,
    exemplars, logs) or as base64 (OTLP JSON bytes fields). Tempo's search drops leading zeros: padded back."""
    text = raw.strip()
    if _HEX.fullmatch(text):
        return text.lower().rjust(digits, "0")
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text.lower()


def _attribute_value(value: Mapping[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])  # OTLP JSON encodes 64-bit integers as strings
    if "arrayValue" in value:
        return [_attribute_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def attributes(pairs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _attribute_value(pair.get("value", {})) for pair in pairs}


def parse_trace(body: Mapping[str, Any]) -> list[Span]:
    """The spans of one trace from Tempo's `GET /api/v2/traces/<id>` (`{"trace": {"resourceSpans": ...}}`);
    the v1 shape (`{"batches": ...}`) is read too."""
    trace = body.get("trace", body)
    spans = []
    for resource_spans in trace.get("resourceSpans") or trace.get("batches") or []:
        resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []:
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                spans.append(
                    Span(
                        trace_id=hex_id(span.get("traceId", "")),
                        span_id=hex_id(span.get("spanId", ""), 16),
                        parent_id=hex_id(span["parentSpanId"], 16) if span.get("parentSpanId") else "",
                        service=service,
                        name=str(span.get("name", "")),
                        kind=_KINDS.get(str(span.get("kind", "")), "internal"),
                        start_ns=int(span.get("startTimeUnixNano", 0)),
                        end_ns=int(span.get("endTimeUnixNano", 0)),
                        error=status.get("code") in ("STATUS_CODE_ERROR", 2),
                        attributes=attributes(span.get("attributes", [])),
                    )
                )
    return spans


def children_of(spans: Sequence[Span]) -> dict[str, list[Span]]:
    children: dict[str, list[Span]] = {}
    for span in spans:
        if span.parent_id:
            children.setdefault(span.parent_id, []).append(span)
    return children


def self_time_ns(span: Span, children: Sequence[Span]) -> int:
    """The span's duration minus the union of its children's intervals (clipped to the span): the time spent
    in the span itself, not waiting for work it handed on (concurrent children are not counted twice)."""
    intervals = sorted((max(c.start_ns, span.start_ns), min(c.end_ns, span.end_ns)) for c in children)
    covered, reach = 0, span.start_ns
    for child_start, child_end in intervals:
        begin = max(child_start, reach)
        if child_end > begin:
            covered += child_end - begin
            reach = child_end
    return max(0, span.duration_ns - covered)


def depth_of(span: Span, by_id: Mapping[str, Span]) -> int:
    depth, seen = 0, {span.span_id}
    while span.parent_id in by_id and span.parent_id not in seen:
        span = by_id[span.parent_id]
        seen.add(span.span_id)
        depth += 1
    return depth
