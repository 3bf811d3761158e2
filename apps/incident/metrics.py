"""What Prometheus says about the window against the period before it: per route, per database operation,
per scrape target. Only the shop's RED metrics, its DB histogram and Prometheus's own `up` and scrape
durations are read; nothing the shop says about injected faults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .backends import Backends, Sample

# A route needs a few requests in a window before its mean means anything.
MIN_REQUESTS = 3
# Twice as slow and by at least this much (seconds) is an anomaly; with no baseline, the SLO's 1 s. Normal
# swings (a load ramp, a cold cache) stay under both.
LATENCY_RATIO, LATENCY_FLOOR_S, LATENCY_SLO_S = 2.0, 0.05, 1.0
DB_RATIO, DB_FLOOR_S = 2.0, 0.005
# Server errors: this much more of the route's traffic, and at least this many.
ERROR_RATIO_RISE, MIN_ERRORS = 0.02, 2
# A scrape that takes this many times longer (and at least this long) means a stalled process: a busy but
# healthy service answers /metrics in milliseconds.
SCRAPE_RATIO, SCRAPE_FLOOR_S = 3.0, 0.5

SHOP_TARGETS = 'job="shop"'


@dataclass(frozen=True)
class Stats:
    """Requests (or statements) in the window and the baseline: count, total seconds, server errors."""

    count: float = 0.0
    seconds: float = 0.0
    errors: float = 0.0
    base_count: float = 0.0
    base_seconds: float = 0.0
    base_errors: float = 0.0

    @property
    def mean_s(self) -> float:
        return self.seconds / self.count if self.count else 0.0

    @property
    def base_mean_s(self) -> float:
        return self.base_seconds / self.base_count if self.base_count else 0.0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.count if self.count else 0.0

    @property
    def base_error_ratio(self) -> float:
        return self.base_errors / self.base_count if self.base_count else 0.0

    def slower(self, ratio: float, floor_s: float) -> bool:
        if self.count < MIN_REQUESTS:
            return False
        if self.base_count < MIN_REQUESTS:  # nothing to compare with: only an SLO breach counts
            return self.mean_s >= LATENCY_SLO_S
        return self.mean_s >= max(ratio * self.base_mean_s, self.base_mean_s + floor_s)

    @property
    def failing(self) -> bool:
        return self.errors >= MIN_ERRORS and self.error_ratio - self.base_error_ratio >= ERROR_RATIO_RISE

    @property
    def added_seconds(self) -> float:
        """Time this window's requests spent beyond what the baseline's mean would have cost."""
        return max(0.0, (self.mean_s - self.base_mean_s) * self.count)


@dataclass(frozen=True)
class TargetHealth:
    up_ratio: float  # share of successful scrapes in the window
    scrape_s: float
    base_scrape_s: float

    @property
    def down(self) -> bool:
        return self.up_ratio < 1.0

    @property
    def stalled(self) -> bool:
        return self.scrape_s >= max(SCRAPE_RATIO * self.base_scrape_s, SCRAPE_FLOOR_S)


@dataclass(frozen=True)
class MetricsView:
    routes: Mapping[tuple[str, str], Stats]  # (service, "GET /orders")
    db: Mapping[tuple[str, str], Stats]  # (service, "orders.list_by_user")
    targets: Mapping[str, TargetHealth]  # by service
    queries: Mapping[str, str]  # what each finding was read with, for the evidence


def _queries(window: str) -> dict[str, str]:
    """The window's queries and, as `base_*`, the same over the period just before it."""

    def over(selector: str, offset: str) -> str:
        return f"{selector}[{window}]{offset}"

    http = "http_request_duration_seconds"
    server_errors = http + '_count{status_code=~"5.."}'
    scrapes = "scrape_duration_seconds{" + SHOP_TARGETS + "}"
    by_route = "sum by (service, method, route)"
    by_operation = "sum by (service, operation)"
    queries: dict[str, str] = {}
    for prefix, offset in (("", ""), ("base_", f" offset {window}")):
        queries |= {
            f"{prefix}count": f"{by_route} (increase({over(http + '_count', offset)}))",
            f"{prefix}seconds": f"{by_route} (increase({over(http + '_sum', offset)}))",
            f"{prefix}errors": f"{by_route} (increase({over(server_errors, offset)}))",
            f"{prefix}db_count": f"{by_operation} (increase({over('db_query_duration_seconds_count', offset)}))",
            f"{prefix}db_seconds": f"{by_operation} (increase({over('db_query_duration_seconds_sum', offset)}))",
            f"{prefix}scrape_s": f"avg by (service) (avg_over_time({over(scrapes, offset)}))",
        }
    queries["up"] = f"avg by (service) (avg_over_time(up{{{SHOP_TARGETS}}}[{window}]))"
    return queries


def read_metrics(backends: Backends, end: float, window_s: int) -> MetricsView:
    """Every query at once (in parallel), each answering for the window ending at `end`."""
    queries = _queries(f"{window_s}s")
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        futures = {name: pool.submit(backends.query, expr, end) for name, expr in queries.items()}
        results = {name: future.result() for name, future in futures.items()}

    def route_key(sample: Sample) -> tuple[str, str]:
        return sample.labels.get("service", ""), f"{sample.labels.get('method', '')} {sample.labels.get('route', '')}"

    def db_key(sample: Sample) -> tuple[str, str]:
        return sample.labels.get("service", ""), sample.labels.get("operation", "")

    routes = _combine(results, route_key, ("count", "seconds", "errors"))
    db = _combine(results, db_key, ("db_count", "db_seconds"))
    up = {s.labels.get("service", ""): s.value for s in results["up"]}
    scrape = {s.labels.get("service", ""): s.value for s in results["scrape_s"]}
    base_scrape = {s.labels.get("service", ""): s.value for s in results["base_scrape_s"]}
    targets = {
        service: TargetHealth(up.get(service, 0.0), scrape.get(service, 0.0), base_scrape.get(service, 0.0))
        for service in set(up) | set(base_scrape)
        if service
    }
    return MetricsView(routes, db, targets, queries)


def _combine(
    results: Mapping[str, list[Sample]], key: Callable[[Sample], tuple[str, str]], names: tuple[str, ...]
) -> dict[tuple[str, str], Stats]:
    fields: dict[tuple[str, str], dict[str, float]] = {}
    for name in names:
        for prefix in ("", "base_"):
            for sample in results[prefix + name]:
                field_name = prefix + name.removeprefix("db_")
                fields.setdefault(key(sample), {})[field_name] = sample.value
    return {k: Stats(**v) for k, v in fields.items() if k[0]}
