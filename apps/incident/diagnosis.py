"""Diagnosis: which ONE service is at fault, in which operation, with evidence from metrics, traces and logs.

1. Metrics name the symptoms: routes slower or failing more than in the period before the window, database
   operations slower, scrape targets down or stalled.
2. Traces name the origin: exemplars of the anomalous routes (or, without Prometheus, a TraceQL search) give
   slow and failing traces of the window and ordinary ones of the baseline; self time and error origins say
   where the time or the error starts (blame.py), so callers that only suffer are not blamed.
3. Logs confirm: WARN/ERROR lines by service against the baseline, and the culprit's telling lines.

Each backend is optional: what cannot be read is named, and the rest still ranks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .backends import BackendError, Backends, Exemplar, LogLine, http_transport
from .blame import Blame, errors_blame, latency_blame
from .links import DEFAULT_GRAFANA_URL, explore_link
from .metrics import (
    DB_FLOOR_S,
    DB_RATIO,
    LATENCY_FLOOR_S,
    LATENCY_RATIO,
    LATENCY_SLO_S,
    MetricsView,
    Stats,
    read_metrics,
)
from .traces import Span

TRACES_PER_SIDE = 8  # slow or failing traces of the window, and ordinary ones of the baseline, per route
ROUTES_TRACED = 3
# A caller whose callee shows the same symptom is mostly a victim: its own anomaly counts this much.
VICTIM_DISCOUNT = 0.2
# What each signal's share weighs in a candidate's score: traces locate best, logs only confirm.
WEIGHTS = {"metrics": 1.0, "traces": 2.0, "logs": 0.5}
# When no trace shows who calls whom, the shop's own topology (checkout calls the other three).
DEFAULT_CALLS = {"checkout": {"auth", "catalog", "payment"}}
# Fault switches are the lab's own bookkeeping, not a symptom: never read.
NOT_SYMPTOMS = "fault_set|fault_cleared"
WARN_OR_ERROR = "(?i)warn.*|error|critical|fatal"

BACKENDS = {"metrics": "prometheus", "traces": "tempo", "logs": "loki"}  # signal -> where it is read
_DURATION = re.compile(r"(\d+)([smh])")


def parse_window(raw: str) -> int:
    """Seconds in '90s', '5m' or '1h' (10 s to 24 h)."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 5m or 1h, got {raw!r}")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not 10 <= seconds <= 86_400:
        raise ValueError(f"must be between 10s and 24h, got {raw!r}")
    return seconds


@dataclass(frozen=True)
class Candidate:
    service: str
    operation: str | None
    symptom: str  # latency, errors or down
    score: float


@dataclass(frozen=True)
class Evidence:
    signal: str  # metrics, traces or logs
    summary: str
    query: str
    link: str
    trace_ids: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Diagnosis:
    status: str  # healthy, incident, or unknown when no backend could be read
    culprit: Candidate | None
    confidence: float
    candidates: tuple[Candidate, ...]
    evidence: tuple[Evidence, ...]
    start: float
    end: float
    unavailable: Mapping[str, str] = field(default_factory=dict)  # backend -> why it could not be read
    seconds_taken: float = 0.0

    @property
    def partial(self) -> bool:
        return bool(self.unavailable)

    def to_json(self) -> dict[str, Any]:
        """The documented --json schema (README, "Diagnose")."""
        candidate_fields = ("service", "operation", "symptom", "score")
        return {
            "status": self.status,
            "culprit": {k: v for k, v in asdict(self.culprit).items() if k != "score"} if self.culprit else None,
            "confidence": round(self.confidence, 2),
            "candidates": [{k: getattr(c, k) for k in candidate_fields} for c in self.candidates],
            "evidence": [
                {k: v for k, v in asdict(e).items() if v or k in ("signal", "summary", "query", "link")}
                for e in self.evidence
            ],
            "window": {"start": _iso(self.start), "end": _iso(self.end)},
            "partial": self.partial,
            "unavailable": dict(self.unavailable),
            "seconds_taken": round(self.seconds_taken, 2),
        }


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass
class _Findings:
    """One diagnosis in progress: its window, and what each signal showed, per service."""

    start: float
    end: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # symptom -> service -> magnitude
    blame: dict[str, Blame] = field(default_factory=dict)  # latency / errors -> blame from traces
    down_by_traces: set[str] = field(default_factory=set)
    logs: dict[str, float] = field(default_factory=dict)  # service -> added WARN/ERROR lines
    calls: dict[str, set[str]] = field(default_factory=dict)  # caller -> callees seen in traces
    evidence: list[Evidence] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)


def diagnose_from(urls: Mapping[str, str], window_s: int, timeout_s: float = 4.0) -> Diagnosis:
    """Diagnose the last `window_s` from the backends at `urls` (prometheus, tempo, loki; grafana for links)."""
    backends = Backends(http_transport({k: v for k, v in urls.items() if k in BACKENDS.values()}, timeout_s))
    return Diagnoser(backends, urls.get("grafana", DEFAULT_GRAFANA_URL)).diagnose(window_s)


class Diagnoser:
    def __init__(self, backends: Backends, grafana_url: str = DEFAULT_GRAFANA_URL) -> None:
        self.backends = backends
        self.grafana_url = grafana_url

    def diagnose(self, window_s: int, end: float | None = None) -> Diagnosis:
        started = time.monotonic()
        end = time.time() if end is None else end
        start = end - window_s
        found = _Findings(start, end)
        with ThreadPoolExecutor(max_workers=2) as pool:
            tempo = pool.submit(self._attempt, found, "tempo", self.backends.tempo_version)
            metrics = self._attempt(found, "prometheus", lambda: read_metrics(self.backends, end, window_s))
            tempo.result()
        if metrics is not None:
            self._metric_findings(found, metrics)
        self._trace_findings(found, metrics)
        self._log_counts(found)
        candidates = [_choose_operation(candidate, found, metrics) for candidate in _rank(found)]
        culprit = candidates[0] if candidates else None
        if culprit is not None:
            self._log_lines(found, culprit.service)
        return Diagnosis(
            status="incident" if culprit else ("unknown" if len(found.unavailable) == len(BACKENDS) else "healthy"),
            culprit=culprit,
            confidence=_confidence(culprit, found),
            candidates=tuple(candidates[:5]),
            evidence=tuple(_relevant(found.evidence, culprit)),
            start=start,
            end=end,
            unavailable=found.unavailable,
            seconds_taken=time.monotonic() - started,
        )

    # --- gathering ---

    @staticmethod
    def _attempt(found: _Findings, backend: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except BackendError as exc:
            found.unavailable.setdefault(exc.backend, exc.reason)
            return None

    def _link(self, signal: str, query: str, start: float, end: float) -> str:
        return explore_link(signal, query, start, end, self.grafana_url)

    def _metric_findings(self, found: _Findings, metrics: MetricsView) -> None:
        start, end = found.start, found.end
        window = f"{int(end - start)}s"
        latency, errors, down = found.metrics.setdefault("latency", {}), found.metrics.setdefault("errors", {}), {}
        for (service, route), stats in metrics.routes.items():
            method, _, path = route.partition(" ")
            selector = f'service="{service}", method="{method}", route="{path}"'
            if stats.slower(LATENCY_RATIO, LATENCY_FLOOR_S):
                latency[service] = latency.get(service, 0.0) + stats.added_seconds
                query = _mean_query("http_request_duration_seconds", selector, window)
                summary = (
                    f"{service} {route}: mean {_ms(stats.base_mean_s)} -> {_ms(stats.mean_s)} "
                    f"over {stats.count:.0f} requests"
                )
                found.evidence.append(Evidence("metrics", summary, query, self._link("metrics", query, start, end)))
            if stats.failing:
                errors[service] = errors.get(service, 0.0) + stats.errors
                query = (
                    f'sum(rate(http_request_duration_seconds_count{{{selector}, status_code=~"5.."}}[{window}])) / '
                    f"sum(rate(http_request_duration_seconds_count{{{selector}}}[{window}]))"
                )
                summary = (
                    f"{service} {route}: {stats.error_ratio:.0%} server errors "
                    f"({stats.errors:.0f} of {stats.count:.0f}; baseline {stats.base_error_ratio:.0%})"
                )
                found.evidence.append(Evidence("metrics", summary, query, self._link("metrics", query, start, end)))
        for (service, operation), stats in metrics.db.items():
            if stats.slower(DB_RATIO, DB_FLOOR_S):
                latency[service] = latency.get(service, 0.0) + stats.added_seconds
                query = _mean_query(
                    "db_query_duration_seconds", f'service="{service}", operation="{operation}"', window
                )
                summary = (
                    f"{service} database {operation}: mean {_ms(stats.base_mean_s)} -> {_ms(stats.mean_s)} "
                    f"over {stats.count:.0f} statements"
                )
                found.evidence.append(Evidence("metrics", summary, query, self._link("metrics", query, start, end)))
        for service, target in metrics.targets.items():
            if target.down or target.stalled:
                down[service] = 1.0
                query = f'up{{job="shop", service="{service}"}}'
                what = f"{1 - target.up_ratio:.0%} of scrapes failed" if target.down else "scrapes stalled"
                summary = f"{service}: {what}; scrape took {_ms(target.base_scrape_s)} -> {_ms(target.scrape_s)}"
                found.evidence.append(Evidence("metrics", summary, query, self._link("metrics", query, start, end)))
        if down:
            found.metrics["down"] = down

    def _trace_findings(self, found: _Findings, metrics: MetricsView | None) -> None:
        start, end = found.start, found.end
        if metrics is not None:
            slow_ids, slow_base, failing_ids, failing_base = self._exemplar_traces(found, metrics)
        else:
            slow_ids, slow_base, failing_ids, failing_base = self._searched_traces(found)
        wanted = list(dict.fromkeys([*slow_ids, *slow_base, *failing_ids, *failing_base]))
        if not wanted:
            return
        with ThreadPoolExecutor(max_workers=8) as pool:
            fetched = dict(zip(wanted, pool.map(self._trace_or_none(found), wanted), strict=True))
        traces = {trace_id: spans for trace_id, spans in fetched.items() if spans}
        for spans in traces.values():
            _learn_calls(found.calls, spans)

        def pick(ids: Iterable[str]) -> list[list[Span]]:
            return [traces[i] for i in dict.fromkeys(ids) if i in traces]

        found.blame["latency"] = latency_blame(pick(slow_ids), pick(slow_base))
        errors, symptoms = errors_blame(pick(failing_ids), pick(failing_base))
        found.blame["errors"] = errors
        found.down_by_traces = {key[0] for key, symptom in symptoms.items() if symptom == "down"}
        for kind, blame in found.blame.items():
            for key in sorted(blame.shares, key=lambda k: -blame.shares[k])[:3]:
                service, operation = key
                traceql = _traceql(service, operation, errors=kind == "errors")
                whole = "added time" if kind == "latency" else "failures"
                summary = (
                    f"{service} {operation or '(no answer)'}: {blame.detail[key]} "
                    f"({blame.shares[key]:.0%} of the {whole})"
                )
                found.evidence.append(
                    Evidence("traces", summary, traceql, self._link("traces", traceql, start, end), blame.examples[key])
                )

    def _trace_or_none(self, found: _Findings) -> Callable[[str], list[Span]]:
        def fetch(trace_id: str) -> list[Span]:
            spans = self._attempt(found, "tempo", lambda: self.backends.trace(trace_id))
            return spans or []

        return fetch

    def _exemplar_traces(
        self, found: _Findings, metrics: MetricsView
    ) -> tuple[list[str], list[str], list[str], list[str]]:
        """Trace ids of slow and failing requests on the anomalous routes, and of the same routes before."""
        slow = sorted(
            (item for item in metrics.routes.items() if item[1].slower(LATENCY_RATIO, LATENCY_FLOOR_S)),
            key=lambda item: -item[1].added_seconds,
        )[:ROUTES_TRACED]
        failing = sorted(
            (item for item in metrics.routes.items() if item[1].failing), key=lambda item: -item[1].errors
        )[:ROUTES_TRACED]
        slow_ids, slow_base, failing_ids, failing_base = [], [], [], []
        for (service, route), stats in slow:
            now, before = self._route_exemplars(found, service, route)
            threshold = max(LATENCY_RATIO * stats.base_mean_s, stats.base_mean_s + LATENCY_FLOOR_S)
            slow_ids += _ids(sorted((e for e in now if e.value >= threshold), key=lambda e: -e.value))
            slow_base += _ids(before)
        for (service, route), _stats in failing:
            now, before = self._route_exemplars(found, service, route)
            failing_ids += _ids(e for e in now if e.labels.get("status_code", "").startswith("5"))
            failing_base += _ids(before)
        return slow_ids, slow_base, failing_ids, failing_base

    def _route_exemplars(self, found: _Findings, service: str, route: str) -> tuple[list[Exemplar], list[Exemplar]]:
        start, end = found.start, found.end
        method, _, path = route.partition(" ")
        selector = f'http_request_duration_seconds_bucket{{service="{service}", method="{method}", route="{path}"}}'
        exemplars = self._attempt(found, "prometheus", lambda: self.backends.exemplars(selector, 2 * start - end, end))
        exemplars = exemplars or []
        return [e for e in exemplars if e.timestamp >= start], [e for e in exemplars if e.timestamp < start]

    def _searched_traces(self, found: _Findings) -> tuple[list[str], list[str], list[str], list[str]]:
        """Without Prometheus: failing and slow server spans from Tempo's search, ordinary ones before."""
        start, end = found.start, found.end

        def search(query: str, since: float, until: float) -> list[str]:
            ids = self._attempt(found, "tempo", lambda: self.backends.search(query, since, until, TRACES_PER_SIDE))
            return ids or []

        shop = 'resource.service.namespace = "shop" && kind = server'
        baseline = search(f"{{ {shop} }}", 2 * start - end, start)
        failing = search(f"{{ {shop} && status = error }}", start, end)
        slow = search(f"{{ {shop} && duration > {int(LATENCY_SLO_S * 1000)}ms }}", start, end)
        return slow, baseline, failing, baseline

    def _log_counts(self, found: _Findings) -> None:
        start, end = found.start, found.end
        window = f"{int(end - start)}s"
        selector = f'{{service_namespace="shop"}} | severity_text=~"{WARN_OR_ERROR}" !~ "{NOT_SYMPTOMS}"'
        count = f"sum by (service_name) (count_over_time({selector} [{window}]))"
        now = self._attempt(found, "loki", lambda: self.backends.log_counts(count, end))
        if now is None:
            return
        before = self._attempt(found, "loki", lambda: self.backends.log_counts(count, start)) or []
        base = {s.labels.get("service_name", ""): s.value for s in before}
        for sample in now:
            service = sample.labels.get("service_name", "")
            added = sample.value - base.get(service, 0.0)
            if service and added > 0:
                found.logs[service] = added

    def _log_lines(self, found: _Findings, service: str) -> None:
        start, end = found.start, found.end
        logql = f'{{service_name="{service}"}} | severity_text=~"{WARN_OR_ERROR}" !~ "{NOT_SYMPTOMS}"'
        lines = self._attempt(found, "loki", lambda: self.backends.logs(logql, start, end, 50))
        if not lines:
            return
        summary = f"{service}: {len(lines)}{'+' if len(lines) >= 50 else ''} WARN/ERROR lines in the window"
        if service in found.logs:
            summary += f" ({found.logs[service]:.0f} more than before it)"
        found.evidence.append(
            Evidence(
                "logs",
                summary,
                logql,
                self._link("logs", logql, start, end),
                tuple(dict.fromkeys(line.trace_id for line in lines if line.trace_id))[:3],
                tuple(_telling(lines)),
            )
        )


def _ids(exemplars: Iterable[Exemplar]) -> list[str]:
    return list(dict.fromkeys(e.trace_id for e in exemplars))[:TRACES_PER_SIDE]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _mean_query(metric: str, selector: str, window: str) -> str:
    return f"sum(rate({metric}_sum{{{selector}}}[{window}])) / sum(rate({metric}_count{{{selector}}}[{window}]))"


def _traceql(service: str, operation: str, errors: bool) -> str:
    conditions = [f'resource.service.name = "{service}"']
    if operation:
        conditions.append(f'name = "{operation}"')
    if errors:
        conditions.append("status = error")
    return "{ " + " && ".join(conditions) + " }"


def _learn_calls(calls: dict[str, set[str]], spans: Sequence[Span]) -> None:
    by_id = {span.span_id: span for span in spans}
    for span in spans:
        parent = by_id.get(span.parent_id)
        if span.kind == "server" and parent is not None and parent.service != span.service:
            calls.setdefault(parent.service, set()).add(span.service)


def _telling(lines: Sequence[LogLine]) -> list[str]:
    """A few distinct lines, most frequent first, each with the fields that say what happened."""
    counted: dict[str, int] = {}
    shown: dict[str, str] = {}
    for line in lines:
        key = line.line
        counted[key] = counted.get(key, 0) + 1
        if key not in shown:
            interesting = {
                k: v
                for k, v in line.fields.items()
                if k
                in ("operation", "statement", "duration_ms", "reason", "error_type", "detail", "dependency", "route")
            }
            extra = " ".join(f"{k}={v}" for k, v in interesting.items())
            shown[key] = f"{line.fields.get('severity_text', '')} {line.line} {extra}".strip()
    ordered = sorted(counted, key=lambda key: -counted[key])[:3]
    return [f"{counted[key]} x {shown[key]}" for key in ordered]


def _shares(values: Mapping[str, float]) -> dict[str, float]:
    total = sum(v for v in values.values() if v > 0)
    return {k: v / total for k, v in values.items() if v > 0} if total else {}


def _discount_victims(magnitudes: Mapping[str, float], calls: Mapping[str, set[str]]) -> dict[str, float]:
    """A caller whose callee shows the same symptom is mostly suffering it."""
    return {
        service: value * (VICTIM_DISCOUNT if calls.get(service, set()) & set(magnitudes) else 1.0)
        for service, value in magnitudes.items()
    }


def _rank(found: _Findings) -> list[Candidate]:
    calls = found.calls or DEFAULT_CALLS
    symptom = _symptom(found)
    if symptom is None:
        return []
    scores: dict[str, float] = {}

    def add(shares: Mapping[str, float], weight: float) -> None:
        for service, share in shares.items():
            scores[service] = scores.get(service, 0.0) + weight * share

    add(_shares(_discount_victims(found.metrics.get(symptom, {}), calls)), WEIGHTS["metrics"])
    if symptom == "down":
        add(_shares(dict.fromkeys(found.down_by_traces, 1.0)), WEIGHTS["traces"])
    blame = found.blame.get("errors" if symptom == "down" else symptom)
    if blame is not None:
        by_service: dict[str, float] = {}
        for (service, _operation), share in blame.shares.items():
            by_service[service] = by_service.get(service, 0.0) + share
        add(by_service, WEIGHTS["traces"])
    add(_shares(_discount_victims(found.logs, calls)), WEIGHTS["logs"])
    total = sum(scores.values())
    ranked = sorted(scores, key=lambda service: -scores[service])
    return [Candidate(service, None, symptom, round(scores[service] / total, 3)) for service in ranked]


def _symptom(found: _Findings) -> str | None:
    """The worst symptom anything showed: a service down, then server errors, then latency."""
    if found.metrics.get("down") or found.down_by_traces:
        return "down"
    if found.metrics.get("errors") or (found.blame.get("errors") and found.blame["errors"].shares):
        return "errors"
    if found.metrics.get("latency") or (found.blame.get("latency") and found.blame["latency"].shares):
        return "latency"
    return None


def _choose_operation(top: Candidate, found: _Findings, metrics: MetricsView | None) -> Candidate:
    """Where in the culprit: the trace blame's top operation of it, else its most anomalous DB operation or
    route from metrics. A service that does not answer has no operation of its own to name."""
    if top.symptom == "down":
        return top
    blame = found.blame.get(top.symptom)
    if blame is not None:
        own = {key: share for key, share in blame.shares.items() if key[0] == top.service and key[1]}
        if own:
            return Candidate(top.service, max(own, key=lambda key: own[key])[1], top.symptom, top.score)
    if metrics is not None:
        if top.symptom == "latency":
            db = _worst(metrics.db, top.service, lambda s: s.slower(DB_RATIO, DB_FLOOR_S), lambda s: s.added_seconds)
            if db:
                return Candidate(top.service, db, top.symptom, top.score)
            route = _worst(
                metrics.routes,
                top.service,
                lambda s: s.slower(LATENCY_RATIO, LATENCY_FLOOR_S),
                lambda s: s.added_seconds,
            )
        else:
            route = _worst(metrics.routes, top.service, lambda s: s.failing, lambda s: s.errors)
        if route:
            return Candidate(top.service, route, top.symptom, top.score)
    return top


def _worst(
    stats: Mapping[tuple[str, str], Stats],
    service: str,
    anomalous: Callable[[Stats], bool],
    size: Callable[[Stats], float],
) -> str | None:
    mine = {name: s for (owner, name), s in stats.items() if owner == service and anomalous(s)}
    return max(mine, key=lambda name: size(mine[name])) if mine else None


def _confidence(culprit: Candidate | None, found: _Findings) -> float:
    """How sure: the culprit's share of the blame, and how many of the readable signals point at it."""
    readable = [signal for signal, backend in BACKENDS.items() if backend not in found.unavailable]
    if culprit is None:
        return round(len(readable) / len(BACKENDS), 2)
    agreeing = {e.signal for e in found.evidence if _about(e, culprit.service)}
    return round(0.5 * culprit.score + 0.5 * len(agreeing & set(readable)) / max(1, len(readable)), 2)


def _relevant(evidence: Sequence[Evidence], culprit: Candidate | None) -> list[Evidence]:
    """The culprit's evidence first, then the rest (victims), a few per signal."""
    if culprit is None:
        return list(evidence)
    mine = [e for e in evidence if _about(e, culprit.service)]
    others = [e for e in evidence if e not in mine]
    return (mine + others)[:12]


def _about(evidence: Evidence, service: str) -> bool:
    return evidence.summary.startswith((service + " ", service + ":"))
