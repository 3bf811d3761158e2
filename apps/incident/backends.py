"""The three backends diagnosis reads, through their public HTTP APIs, each call bounded by a timeout.

Prometheus: `/api/v1/query` and `/api/v1/query_exemplars`. Tempo: `/api/v2/traces/<id>` and `/api/search`.
Loki: `/loki/api/v1/query_range`. Any failure (refused, timed out, not JSON, an error status) is a
`BackendError` naming the backend and why, so a diagnosis can go on from the others.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .traces import Span, hex_id, parse_trace

# (backend, path, params) -> decoded JSON body; tests and the fixture recorder swap it.
Transport = Callable[[str, str, Mapping[str, str]], Any]


class BackendError(Exception):
    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason


def http_transport(urls: Mapping[str, str], timeout_s: float) -> Transport:
    """GET `<url of backend><path>?<params>` and decode its JSON, with one session per backend."""
    sessions = {name: requests.Session() for name in urls}

    def get(backend: str, path: str, params: Mapping[str, str]) -> Any:
        try:
            response = sessions[backend].get(urls[backend] + path, params=dict(params), timeout=timeout_s)
        except requests.Timeout:
            raise BackendError(backend, f"no answer from {urls[backend]} within {timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise BackendError(backend, f"cannot reach {urls[backend]} ({type(exc).__name__})") from None
        if response.status_code == 404 and backend == "tempo" and path.startswith("/api/v2/traces/"):
            return None  # a trace Tempo does not have (yet): not a failure of Tempo
        if response.status_code != 200:
            raise BackendError(backend, f"{path} answered {response.status_code}: {response.text[:200].strip()}")
        try:
            return response.json()
        except json.JSONDecodeError:
            raise BackendError(backend, f"{path} answered something that is not JSON") from None

    return get


def recording(transport: Transport, exchanges: list[dict[str, Any]]) -> Transport:
    """The same transport, keeping every request and its answer (or failure) in `exchanges`: how test fixtures
    are recorded from the real backends (bench/diagnosis.py --save-responses)."""
    lock = threading.Lock()

    def get(backend: str, path: str, params: Mapping[str, str]) -> Any:
        exchange: dict[str, Any] = {"backend": backend, "path": path, "params": dict(params)}
        try:
            exchange["body"] = transport(backend, path, params)
        except BackendError as exc:
            exchange["error"] = exc.reason
            raise
        finally:
            with lock:
                exchanges.append(exchange)
        return exchange["body"]

    return get


def replaying(exchanges: list[dict[str, Any]]) -> Transport:
    """Answers exactly what was recorded; anything else fails like an unreachable backend, naming the request."""
    recorded = {_exchange_key(e["backend"], e["path"], e["params"]): e for e in exchanges}

    def get(backend: str, path: str, params: Mapping[str, str]) -> Any:
        exchange = recorded.get(_exchange_key(backend, path, params))
        if exchange is None:
            raise BackendError(backend, f"not recorded: {path} {dict(params)}")
        if "error" in exchange:
            raise BackendError(backend, exchange["error"])
        return exchange["body"]

    return get


def _exchange_key(backend: str, path: str, params: Mapping[str, str]) -> str:
    return json.dumps([backend, path, sorted(params.items())])


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Exemplar:
    labels: Mapping[str, str]  # the series' labels
    trace_id: str
    value: float
    timestamp: float


@dataclass(frozen=True)
class LogLine:
    timestamp_ns: int
    service: str
    line: str
    fields: Mapping[str, str] = field(default_factory=dict)  # labels and structured metadata

    @property
    def trace_id(self) -> str:
        raw = self.fields.get("trace_id", "")
        return hex_id(raw) if raw else ""


@dataclass(frozen=True)
class Backends:
    """The three APIs behind one transport; each call names its backend in any BackendError."""

    transport: Transport

    # --- Prometheus ---
    def query(self, expr: str, at: float) -> list[Sample]:
        body = self._prometheus("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        result = body.get("data", {}).get("result", [])
        samples = []
        for item in result:
            value = float(item["value"][1])
            if not math.isnan(value):  # 0/0 where a series had no traffic
                samples.append(Sample(item.get("metric", {}), value))
        return samples

    def exemplars(self, expr: str, start: float, end: float) -> list[Exemplar]:
        body = self._prometheus(
            "/api/v1/query_exemplars", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        found = []
        for series in body.get("data") or []:
            for exemplar in series.get("exemplars", []):
                labels = exemplar.get("labels", {})
                trace_id = labels.get("trace_id") or labels.get("traceID") or labels.get("traceId")
                if trace_id:
                    found.append(
                        Exemplar(
                            series.get("seriesLabels", {}),
                            hex_id(trace_id),
                            float(exemplar["value"]),
                            float(exemplar["timestamp"]),
                        )
                    )
        return found

    def _prometheus(self, path: str, params: Mapping[str, str]) -> Any:
        body = self.transport("prometheus", path, params)
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise BackendError("prometheus", f"{path} failed: {error or 'unexpected answer'}")
        return body

    # --- Tempo ---
    def tempo_version(self) -> str:
        """Tempo's build info: asked so that a Tempo that cannot be reached is known even when no trace is."""
        body = self.transport("tempo", "/api/status/buildinfo", {})
        return str(body.get("version", "")) if isinstance(body, dict) else ""

    def trace(self, trace_id: str) -> list[Span]:
        body = self.transport("tempo", f"/api/v2/traces/{trace_id}", {})
        if body is None:
            return []
        if not isinstance(body, dict):
            raise BackendError("tempo", "a trace came back in an unexpected shape")
        return parse_trace(body)

    def search(self, traceql: str, start: float, end: float, limit: int) -> list[str]:
        params = {"q": traceql, "start": str(int(start)), "end": str(int(end) + 1), "limit": str(limit)}
        body = self.transport("tempo", "/api/search", params)
        if not isinstance(body, dict):
            raise BackendError("tempo", "search came back in an unexpected shape")
        return [hex_id(trace["traceID"]) for trace in body.get("traces") or [] if trace.get("traceID")]

    # --- Loki ---
    def logs(self, logql: str, start: float, end: float, limit: int) -> list[LogLine]:
        params = {
            "query": logql,
            "start": str(int(start * 1e9)),
            "end": str(int(end * 1e9)),
            "limit": str(limit),
            "direction": "backward",
        }
        body = self.transport("loki", "/loki/api/v1/query_range", params)
        if not isinstance(body, dict) or body.get("status") != "success":
            raise BackendError(
                "loki", f"query failed: {body.get('error') if isinstance(body, dict) else 'unexpected answer'}"
            )
        lines = []
        for stream in body.get("data", {}).get("result", []):
            labels = stream.get("stream", {})
            for entry in stream.get("values", []):
                timestamp, line = entry[0], entry[1]
                metadata = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
                fields = {**labels, **_flatten(metadata)}
                lines.append(LogLine(int(timestamp), fields.get("service_name", ""), line, fields))
        return sorted(lines, key=lambda entry: entry.timestamp_ns, reverse=True)

    def log_counts(self, logql: str, at: float) -> list[Sample]:
        """A LogQL metric query (instant), e.g. count_over_time by service."""
        body = self.transport("loki", "/loki/api/v1/query", {"query": logql, "time": str(int(at * 1e9))})
        if not isinstance(body, dict) or body.get("status") != "success":
            raise BackendError("loki", "metric query failed")
        return [
            Sample(item.get("metric", {}), float(item["value"][1])) for item in body.get("data", {}).get("result", [])
        ]


def _flatten(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Loki's categorized labels (`{"structuredMetadata": {...}, "parsed": {...}}`) or a plain mapping."""
    flat: dict[str, str] = {}
    for key, value in metadata.items():
        if isinstance(value, dict):
            flat.update({k: str(v) for k, v in value.items()})
        else:
            flat[key] = str(value)
    return flat
