"""Where, inside traces, the time or the error originates.

Latency: each span's self time (its duration minus its children's), summed per (service, operation) and
compared between the window's slow traces and the baseline's. A client span's self time is time spent
waiting on the callee beyond the callee's own server span (a queue, a stalled process, a network): it is
blamed on the callee. Errors: the deepest span with status error that has no failing span below it; a client
span whose callee never answered (refused, timed out) blames the callee.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .traces import Span, children_of, depth_of, self_time_ns

Key = tuple[str, str]  # (service, operation)


@dataclass(frozen=True)
class Blame:
    """Per (service, operation): the share of the window's added time or of its error origins."""

    shares: Mapping[Key, float]
    examples: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)  # trace ids showing it
    detail: Mapping[Key, str] = field(default_factory=dict)  # e.g. "self time 12 ms -> 480 ms"

    def top(self) -> Key | None:
        return max(self.shares, key=lambda key: self.shares[key]) if self.shares else None


def peer_services(traces: Iterable[Sequence[Span]]) -> dict[str, str]:
    """host:port -> service, learnt from client spans whose callee's server span is in the trace."""
    learnt: dict[str, str] = {}
    for spans in traces:
        children = children_of(spans)
        for span in spans:
            if span.kind == "client" and span.peer:
                for child in children.get(span.span_id, []):
                    if child.kind == "server":
                        learnt[span.peer] = child.service
    return learnt


def _callee(span: Span, children: Sequence[Span], peers: Mapping[str, str]) -> tuple[str, str] | None:
    """(service, operation) a client span waited on: its callee's server span, or the callee by address."""
    for child in children:
        if child.kind == "server":
            return child.service, child.name
    if span.peer in peers:
        return peers[span.peer], ""
    return None


def self_time_by_operation(spans: Sequence[Span], peers: Mapping[str, str]) -> dict[Key, tuple[float, str]]:
    """Seconds of self time per (service, operation) in one trace, and a trace id to show for it."""
    children = children_of(spans)
    totals: dict[Key, tuple[float, str]] = {}
    for span in spans:
        mine = children.get(span.span_id, [])
        key: Key = (span.service, span.name)
        if span.kind == "client":
            callee = _callee(span, mine, peers)
            if callee is not None:
                key = callee
        seconds = self_time_ns(span, mine) / 1e9
        totals[key] = (totals.get(key, (0.0, ""))[0] + seconds, span.trace_id)
    return totals


def latency_blame(window: Sequence[Sequence[Span]], baseline: Sequence[Sequence[Span]]) -> Blame:
    """Added self time per (service, operation): mean per window trace minus mean per baseline trace."""
    if not window:
        return Blame({})
    peers = peer_services([*window, *baseline])
    now: dict[Key, float] = {}
    examples: dict[Key, list[str]] = {}
    for spans in window:
        for key, (seconds, trace_id) in self_time_by_operation(spans, peers).items():
            now[key] = now.get(key, 0.0) + seconds / len(window)
            examples.setdefault(key, []).append(trace_id)
    before: dict[Key, float] = {}
    for spans in baseline:
        for key, (seconds, _) in self_time_by_operation(spans, peers).items():
            before[key] = before.get(key, 0.0) + seconds / len(baseline)
    added = {key: now[key] - before.get(key, 0.0) for key in now}
    positive = {key: value for key, value in added.items() if value > 0}
    total = sum(positive.values())
    if total <= 0:
        return Blame({})
    shares = {key: value / total for key, value in positive.items()}
    detail = {
        key: f"self time {before.get(key, 0.0) * 1000:.0f} ms -> {now[key] * 1000:.0f} ms per trace" for key in positive
    }
    return Blame(shares, {key: tuple(dict.fromkeys(examples[key]))[:3] for key in positive}, detail)


def error_origins(spans: Sequence[Span], peers: Mapping[str, str]) -> list[tuple[Key, str]]:
    """(service, operation) and symptom ('errors' or 'down') where each failure in one trace starts."""
    by_id = {span.span_id: span for span in spans}
    children = children_of(spans)
    failing = {span.span_id for span in spans if span.error}

    def fails_below(span: Span) -> bool:
        return any(c.span_id in failing or fails_below(c) for c in children.get(span.span_id, []))

    origins = []
    for span in sorted((by_id[i] for i in failing), key=lambda s: -depth_of(s, by_id)):
        if fails_below(span):
            continue
        mine = children.get(span.span_id, [])
        if span.kind == "client":
            if any(child.kind == "server" for child in mine):
                continue  # the callee answered (a 4xx): the caller's own handling, not an origin
            callee = peers.get(span.peer)
            if callee is not None:
                origins.append(((callee, ""), "down"))
                continue
        origins.append(((span.service, span.name), "errors"))
    return origins


def errors_blame(window: Sequence[Sequence[Span]], baseline: Sequence[Sequence[Span]]) -> tuple[Blame, dict[Key, str]]:
    """Share of the window's error origins per (service, operation), beyond what the baseline had."""
    peers = peer_services([*window, *baseline])
    now: Counter[Key] = Counter()
    symptoms: dict[Key, str] = {}
    examples: dict[Key, list[str]] = {}
    for spans in window:
        for key, symptom in error_origins(spans, peers):
            now[key] += 1
            symptoms[key] = symptom
            examples.setdefault(key, []).append(spans[0].trace_id)
    before: Counter[Key] = Counter()
    for spans in baseline:
        before.update(key for key, _ in error_origins(spans, peers))
    added = {
        key: count / len(window) - before[key] / max(1, len(baseline))
        for key, count in now.items()
        if count / len(window) > before[key] / max(1, len(baseline))
    }
    total = sum(added.values())
    if total <= 0:
        return Blame({}), {}
    shares = {key: value / total for key, value in added.items()}
    detail = {key: f"{now[key]} of {len(window)} failing traces start here" for key in added}
    return Blame(shares, {key: tuple(dict.fromkeys(examples[key]))[:3] for key in added}, detail), symptoms
