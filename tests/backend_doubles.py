"""Test doubles for the read APIs of Tempo and Loki that diagnosis calls, answered from what the OTLP test
receiver collected. Tempo and Loki cannot run here; these are not them.

They answer only the query shapes diagnosis sends (anything else is a 400 that names it), in the response
shapes recorded from the real Tempo 3.0.3 and Loki 3.7.6 (tests/fixtures/diagnosis/); test_diagnosis.py
checks the two agree, key for key, so a double cannot drift from what the real backends return.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from otlp_receiver import LogRecord, OtlpReceiver, Span

_KINDS = {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER", 3: "SPAN_KIND_CLIENT"}
_STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


class UnsupportedQuery(ValueError):
    """A query outside the subset the double answers."""


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _otlp_attributes(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _otlp_value(value)} for key, value in attributes.items()]


def trace_json(spans: Iterable[Span]) -> dict[str, Any]:
    """`GET /api/v2/traces/<id>` as Tempo answers it: OTLP JSON, ids base64, times as strings."""
    by_service: dict[str, list[Span]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span)
    resource_spans = []
    for service, mine in by_service.items():
        encoded = []
        for span in mine:
            item: dict[str, Any] = {
                "traceId": _b64(span.trace_id),
                "spanId": _b64(span.span_id),
                "name": span.name,
                "kind": _KINDS.get(span.kind, "SPAN_KIND_UNSPECIFIED"),
                "startTimeUnixNano": str(span.start_ns),
                "endTimeUnixNano": str(span.end_ns),
                "attributes": _otlp_attributes(span.attributes),
                "status": {"code": _STATUS[span.status_code]} if span.status_code else {},
            }
            if span.parent_span_id:
                item["parentSpanId"] = _b64(span.parent_span_id)
            encoded.append(item)
        resource = {"service.name": service, **mine[0].resource}
        resource_spans.append(
            {"resource": {"attributes": _otlp_attributes(resource)}, "scopeSpans": [{"spans": encoded}]}
        )
    return {"trace": {"resourceSpans": resource_spans}}


# --- TraceQL: `{ cond && cond }` with resource/span equality, kind, status, duration > Nms ---
_CONDITION = re.compile(r'(?P<field>[\w.]+)\s*(?P<op>=|>)\s*(?:"(?P<text>[^"]*)"|(?P<word>\w+))')


def _span_matches(span: Span, condition: re.Match[str]) -> bool:
    field, op = condition["field"], condition["op"]
    value = condition["text"] if condition["text"] is not None else condition["word"]
    if field == "kind":
        return _KINDS.get(span.kind, "").endswith(value.upper())
    if field == "status":
        return _STATUS[span.status_code].endswith(value.upper())
    if field == "duration" and op == ">":
        match = re.fullmatch(r"(\d+)(ms|s)", value)
        if match is None:
            raise UnsupportedQuery(f"duration {value}")
        limit_ns = int(match[1]) * (1_000_000 if match[2] == "ms" else 1_000_000_000)
        return span.end_ns - span.start_ns > limit_ns
    if field == "name":
        return span.name == value
    if field.startswith("resource."):
        key = field.removeprefix("resource.")
        return str({"service.name": span.service, **span.resource}.get(key)) == value
    if field.startswith("span."):
        return str(span.attributes.get(field.removeprefix("span."))) == value
    raise UnsupportedQuery(field)


def search(receiver: OtlpReceiver, query: str, start_s: float, end_s: float, limit: int) -> dict[str, Any]:
    body = query.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise UnsupportedQuery(query)
    parts = [part.strip() for part in body[1:-1].split("&&") if part.strip()]
    conditions = [_CONDITION.fullmatch(part) for part in parts]
    if any(c is None for c in conditions):
        raise UnsupportedQuery(query)
    with receiver._lock:
        spans = list(receiver.spans)
    found: dict[str, list[Span]] = {}
    for span in spans:
        if start_s * 1e9 <= span.start_ns <= end_s * 1e9 and all(_span_matches(span, c) for c in conditions if c):
            found.setdefault(span.trace_id, []).append(span)
    traces = []
    for trace_id in list(found)[-limit:]:
        whole = receiver.spans_of(trace_id)
        root = min(whole, key=lambda s: s.start_ns)
        traces.append(
            {
                "traceID": trace_id.lstrip("0"),  # as Tempo does
                "rootServiceName": root.service,
                "rootTraceName": root.name,
                "startTimeUnixNano": str(root.start_ns),
                "durationMs": int((max(s.end_ns for s in whole) - root.start_ns) / 1e6),
            }
        )
    return {"traces": traces, "metrics": {"inspectedBytes": "0", "completedJobs": 1, "totalJobs": 1}}


# --- LogQL: `{label="v", ...}` then `| field=~"re"`, `| field="v"`, `!~ "re"`, `|~ "re"`, `|= "s"`, `!= "s"` ---
_SELECTOR = re.compile(r"\s*\{(?P<matchers>[^}]*)\}(?P<pipeline>.*)")
_MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')
_STAGE = re.compile(r'\s*(?:\|\s*(?P<field>\w+)\s*(?P<op>=~|!~|!=|=)|(?P<filter>\|=|!=|\|~|!~))\s*"(?P<value>[^"]*)"')
_LINE_FILTERS: dict[str, Callable[[str, str], bool]] = {
    "|=": lambda text, line: text in line,
    "!=": lambda text, line: text not in line,
    "|~": lambda pattern, line: re.search(pattern, line) is not None,
    "!~": lambda pattern, line: re.search(pattern, line) is None,
}
_METRIC = re.compile(r"sum by \((?P<by>[\w, ]*)\) \(count_over_time\((?P<logs>.*) \[(?P<range>\d+)s\]\)\)")


def _labels(record: LogRecord) -> dict[str, str]:
    """Index labels from the resource (as Loki's OTLP defaults make them) and structured metadata."""
    labels = {
        "service_name": record.service,
        "service_namespace": str(record.resource.get("service.namespace", "")),
    }
    metadata = {key.replace(".", "_"): str(value) for key, value in record.attributes.items()}
    metadata.update(severity_text=record.severity, trace_id=record.trace_id, span_id=record.span_id)
    return {**labels, **metadata}


def _compare(op: str, actual: str, expected: str) -> bool:
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if op == "=~":
        return re.fullmatch(expected, actual) is not None  # label regexes are anchored in LogQL
    return re.fullmatch(expected, actual) is None


def _log_filter(query: str) -> Callable[[LogRecord], bool]:
    match = _SELECTOR.fullmatch(query)
    if match is None:
        raise UnsupportedQuery(query)
    matchers = [_MATCHER.fullmatch(m) for m in match["matchers"].split(",") if m.strip()]
    pipeline, stages = match["pipeline"], []
    while pipeline.strip():
        stage = _STAGE.match(pipeline)
        if stage is None:
            raise UnsupportedQuery(pipeline)
        stages.append(stage)
        pipeline = pipeline[stage.end() :]
    if any(m is None for m in matchers):
        raise UnsupportedQuery(query)

    def keep(record: LogRecord) -> bool:
        labels, line = _labels(record), str(record.body)
        if not all(_compare(m[2], labels.get(m[1], ""), m[3]) for m in matchers if m):
            return False
        for stage in stages:
            if stage["field"]:
                kept = _compare(stage["op"], labels.get(stage["field"], ""), stage["value"])
            else:
                kept = _LINE_FILTERS[stage["filter"]](stage["value"], line)
            if not kept:
                return False
        return True

    return keep


def _records(receiver: OtlpReceiver) -> list[LogRecord]:
    with receiver._lock:
        return list(receiver.logs)


def query_range(receiver: OtlpReceiver, query: str, start_ns: int, end_ns: int, limit: int) -> dict[str, Any]:
    keep = _log_filter(query)
    chosen = [r for r in _records(receiver) if start_ns <= r.timestamp_ns <= end_ns and keep(r)]
    chosen = sorted(chosen, key=lambda r: -r.timestamp_ns)[:limit]
    streams: dict[str, dict[str, Any]] = {}
    for record in chosen:
        labels = _labels(record)
        stream = streams.setdefault(json.dumps(labels, sort_keys=True), {"stream": labels, "values": []})
        stream["values"].append([str(record.timestamp_ns), str(record.body)])
    return {"status": "success", "data": {"resultType": "streams", "result": list(streams.values())}}


def instant_query(receiver: OtlpReceiver, query: str, at_ns: int) -> dict[str, Any]:
    metric = _METRIC.fullmatch(query.strip())
    if metric is None:
        raise UnsupportedQuery(query)
    keep = _log_filter(metric["logs"])
    since = at_ns - int(metric["range"]) * 1_000_000_000
    by = [label.strip() for label in metric["by"].split(",") if label.strip()]
    counts: dict[tuple[str, ...], int] = {}
    for record in _records(receiver):
        if since < record.timestamp_ns <= at_ns and keep(record):
            labels = _labels(record)
            key = tuple(labels.get(label, "") for label in by)
            counts[key] = counts.get(key, 0) + 1
    result = [
        {"metric": dict(zip(by, key, strict=True)), "value": [at_ns / 1e9, str(count)]} for key, count in counts.items()
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class BackendDouble:
    """One HTTP server on a free loopback port answering Tempo's (kind "tempo") or Loki's ("loki") read API."""

    def __init__(self, kind: str, receiver: OtlpReceiver) -> None:
        self.kind = kind
        self.receiver = receiver
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BackendDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        if self.kind == "tempo" and path == "/api/status/buildinfo":
            return 200, {
                "version": "test double",
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
            }
        if self.kind == "tempo" and path.startswith("/api/v2/traces/"):
            spans = self.receiver.spans_of(path.rsplit("/", 1)[1].lower().rjust(32, "0"))
            return 200, trace_json(spans) if spans else {"trace": {}, "metrics": {}}  # as Tempo 3 answers an unknown id
        if self.kind == "tempo" and path == "/api/search":
            now = time.time()
            start, end = float(params.get("start", now - 3600)), float(params.get("end", now))
            return 200, search(self.receiver, params["q"], start, end, int(params.get("limit", 20)))
        if self.kind == "loki" and path == "/loki/api/v1/query_range":
            limit = int(params.get("limit", 100))
            return 200, query_range(self.receiver, params["query"], int(params["start"]), int(params["end"]), limit)
        if self.kind == "loki" and path == "/loki/api/v1/query":
            return 200, instant_query(self.receiver, params["query"], int(params.get("time", time.time_ns())))
        return 404, {"error": f"{path} is not something this {self.kind} double answers"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {key: values[-1] for key, values in parse_qs(url.query).items()}
                double.requests.append(self.path)
                try:
                    status, body = double.answer(url.path, params)
                except (UnsupportedQuery, KeyError, ValueError) as exc:
                    status, body = 400, {"error": f"the {double.kind} double does not answer this: {exc}"}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler
