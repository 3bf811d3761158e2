"""`shoplab capacity`: what this shop's telemetry would cost at 100 users, and at 100 million.

From what the lab measured (bench/baseline.json, section "overhead", written by `bench/overhead.py --record`): the
spans and log records one request makes and their OTLP bytes, the Prometheus series one instance of each service
exposes, and the highest rate one instance of the shop sustains. From those and the stated assumptions (requests per
user, peak hour, sampling, retention, compression), per number of users: requests/s, spans and log records/s,
instances and series, each backend's ingest per second and per day and its storage at retention, and the component
counts Grafana's sizing guidance gives for Tempo, Loki and Mimir (sources in SOURCES, cited in the output).

Pure functions, no I/O but load_measurements; the `capacity` subcommand of incident/cli.py prints them.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shoplib.services import SERVICES

# The repository's measurements, found from this file (apps/incident/capacity.py): present in a checkout (the
# project is installed editable), absent where the package is installed on its own.
DEFAULT_MEASUREMENTS = Path(__file__).resolve().parents[2] / "bench" / "baseline.json"
# --record replaces the whole "overhead" section, so the capacity steps must run in the same recording.
RECORD_HINT = 'make bench-overhead BENCH_ARGS="--capacity --record" (bench/overhead.py)'
MODE = (
    "lab"  # bench/overhead.py's mode for the lab's default telemetry: spans and log records over OTLP, LOG_LEVEL=info
)
DEFAULT_USERS = (100, 10_000, 1_000_000, 100_000_000)
MAX_USERS = 10**10
SECONDS_PER_DAY = 86_400

SOURCES = {
    "tempo_size": "https://grafana.com/docs/tempo/next/set-up-for-tracing/setup-tempo/plan/size/",
    "tempo_modes": "https://grafana.com/docs/tempo/v3.0.x/set-up-for-tracing/setup-tempo/plan/deployment-modes/",
    "tempo_kafka": "https://grafana.com/docs/tempo/latest/reference-tempo-architecture/components/kafka/",
    "tempo_compression": "https://grafana.com/docs/tempo/latest/configuration/compression/",
    "loki_size": "https://grafana.com/docs/loki/latest/setup/size/",
    "loki_modes": "https://grafana.com/docs/loki/latest/get-started/deployment-modes/",
    "loki_compression": "https://github.com/grafana/loki/pull/4645",
    "loki_dedupe": "https://grafana.com/blog/2020/02/19/how-loki-reduces-log-storage/",
    "mimir_capacity": "https://grafana.com/docs/mimir/latest/manage/run-production-environment/planning-capacity/",
    "mimir_capped_large": "https://github.com/grafana/mimir/blob/main/operations/helm/charts/mimir-distributed/"
    "capped-large.yaml",
    "prometheus_storage": "https://prometheus.io/docs/prometheus/latest/storage/#operational-aspects",
}

# Tempo 3 (the lab runs 3.0.3), "Size the cluster" (SOURCES["tempo_size"]), per MB/s received at the distributors.
# Where the docs give a range, the end that asks for more replicas.
TEMPO_BYTES_S_PER_DISTRIBUTOR = 10e6  # "1 replica per every 10MB/s of received traffic"
TEMPO_BYTES_S_PER_LIVE_STORE = 6e6  # "1 replica per every 6-10MB/s"
TEMPO_BYTES_S_PER_QUERIER = 1e6  # "1 replica per every 1-2MB/s"
TEMPO_QUERY_FRONTENDS = 2  # "2 replicas, for high availability"
# Block-builders: "1 replica per partition"; each Kafka partition is read by one live-store and one block-builder
# per zone (SOURCES["tempo_kafka"]), so as many block-builders as live-stores in one zone.
# Monolithic mode while "trace volume is under 25-35 MB/s or 55k-80k spans/s" (SOURCES["tempo_modes"]).
TEMPO_MONOLITHIC_BYTES_S, TEMPO_MONOLITHIC_SPANS_S = 25e6, 55_000

# Loki "Size the cluster" (SOURCES["loki_size"]): base replicas per tier of daily ingestion.
LOKI_MONOLITHIC_BYTES_DAY = 20e9  # "up to approximately 20GB per day" (SOURCES["loki_modes"])
LOKI_TIERS: tuple[tuple[float, dict[str, int]], ...] = (
    # (below this many bytes a day, base replicas)
    (3e12, {"ingester": 6, "distributor": 4, "querier": 10, "query-frontend": 2, "index-gateway": 4, "compactor": 1}),
    (
        30e12,
        {"ingester": 90, "distributor": 40, "querier": 100, "query-frontend": 8, "index-gateway": 10, "compactor": 1},
    ),
)
LOKI_TOP_TIER_BYTES_DAY = 30e12  # "~1PB/month (30TB/day)"; above it, this tier again per 30 TB/day
LOKI_TOP_TIER = {
    "ingester": 150,
    "distributor": 100,
    "querier": 250,
    "query-frontend": 16,
    "index-gateway": 20,
    "compactor": 1,  # a singleton in every tier
}

# Mimir "Planning capacity" (SOURCES["mimir_capacity"]) gives cores per load; replica sizes and the 70 % target
# utilisation are the production values of capped-large.yaml (SOURCES["mimir_capped_large"]).
# Ingesters: "1 core for every 300,000 series in memory" (series in memory = active series x replication factor);
# 5-core ingesters at 70 %: 300,000 x 5 x 0.7 = 1,050,000 in-memory series each. At least as many as the RF.
MIMIR_IN_MEMORY_SERIES_PER_INGESTER = 1_050_000
# Distributors: "1 core every 25,000 samples per second"; 2.8-core distributors at 70 %: 25,000 x 2.8 x 0.7 = 49,000.
MIMIR_SAMPLES_S_PER_DISTRIBUTOR = 49_000
# Compactors: "at least one compactor instance every 20 million active series" (before replication).
MIMIR_SERIES_PER_COMPACTOR = 20_000_000
# capped-large.yaml's own check: "~10M series and scrape interval of 15s" run on 27 ingesters and 12 distributors;
# these rules give 29 and 14.


class MeasurementsError(ValueError):
    """The measurements file cannot give what the model needs; the message says what is missing and how to
    record it."""


@dataclass(frozen=True)
class Measurements:
    """Per request and per instance, as the overhead benchmark measured them (medians over its rounds)."""

    source: str
    recorded_at: str
    spans_per_request: float
    logs_per_request: float  # at LOG_LEVEL=info
    span_bytes: float  # OTLP protobuf bytes on the wire per span, batching overhead included
    log_bytes: float  # the same per log record
    instance_rps: float  # one instance of the shop (each service one gunicorn, on one core), p95 < 500 ms
    instance_rps_is_limit: bool  # False: the benchmark's steps ended first, the instance sustains at least this
    series_per_instance: dict[str, int]

    @property
    def series_total(self) -> int:
        return sum(self.series_per_instance.values())


@dataclass(frozen=True)
class Assumptions:
    """What the model does not measure. Defaults: the lab's settings where it has one, else as stated."""

    requests_per_user: float = 50.0  # a day: one visit of ~3 minutes at the Locust journeys' ~18 requests a minute
    peak_ratio: float = 3.0  # the busiest hour over the day's average
    sampling: float = 1.0  # share of ordinary traces kept (the lab keeps all)
    error_slow_share: float = 0.02  # traces tail sampling keeps whatever the share: 1 % errors, 1 % above p99
    logs_per_request: float | None = None  # None: as measured at LOG_LEVEL=info
    traces_days: float = 1.0  # tempo/tempo.yaml block_retention: 24h
    logs_days: float = 3.0  # loki/loki.yaml retention_period: 72h
    metrics_days: float = 31.0  # compose.yaml Prometheus --storage.tsdb.retention.time=31d
    replication_factor: int = 3  # Mimir's and Loki's default (-ingester.ring.replication-factor)
    scrape_interval_s: float = 15.0  # what the Mimir guide assumes; the lab scrapes the shop every 5 s
    trace_compression: float = 6.7  # Tempo: "zstd will cut your storage costs to ~15% of the uncompressed amount"
    log_compression: float = 5.0  # see assumption_lines: Loki's benchmark logs do 9x, this shop's ids do not
    bytes_per_sample: float = 2.0  # Prometheus: "around 1-2 bytes per sample"; Mimir's guide assumes 2

    def __post_init__(self) -> None:
        above_zero = ("requests_per_user", "scrape_interval_s", "trace_compression", "log_compression")
        for name in (*above_zero, "bytes_per_sample"):
            _require(getattr(self, name) > 0, name, "must be above 0", getattr(self, name))
        _require(self.peak_ratio >= 1, "peak_ratio", "must be at least 1", self.peak_ratio)
        for name in ("sampling", "error_slow_share"):
            _require(0 <= getattr(self, name) <= 1, name, "must be between 0 and 1", getattr(self, name))
        for name in ("traces_days", "logs_days", "metrics_days"):
            _require(getattr(self, name) >= 0, name, "must be 0 or more", getattr(self, name))
        if self.logs_per_request is not None:
            _require(self.logs_per_request >= 0, "logs_per_request", "must be 0 or more", self.logs_per_request)
        _require(self.replication_factor >= 1, "replication_factor", "must be at least 1", self.replication_factor)

    @property
    def kept_share(self) -> float:
        """Share of spans a tail sampler keeps: every error or slow trace, and `sampling` of the others."""
        return self.error_slow_share + (1 - self.error_slow_share) * self.sampling


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} {rule}, got {value!r}")


@dataclass(frozen=True)
class Signal:
    """One backend's load: bytes in per second (the day's average and the peak hour), per day, and stored."""

    bytes_per_s: float
    peak_bytes_per_s: float
    bytes_per_day: float
    stored_bytes: float  # compressed, one copy, at the retention


@dataclass(frozen=True)
class Step:
    """One row of the growth table."""

    users: int
    requests_per_s: float
    peak_requests_per_s: float
    spans_per_s: float  # as the shop makes them
    kept_spans_per_s: float  # what reaches Tempo after tail sampling
    log_records_per_s: float
    instances: int  # of each service, for the peak
    series: int
    samples_per_s: float
    traces: Signal
    logs: Signal
    metrics: Signal  # as stored (bytes per sample), not remote-write bytes on the wire
    components: dict[str, dict[str, int]]


# --- measurements ---


def load_measurements(path: Path) -> Measurements:
    """The model's inputs from a bench/baseline.json; MeasurementsError naming what is missing, never a guess."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        where = (
            " (the default is bench/baseline.json of a shoplab checkout, found next to the installed package; "
            "pass --measurements PATH)"
            if path == DEFAULT_MEASUREMENTS
            else ""
        )
        raise MeasurementsError(f"no measurements file at {path}{where}") from None
    except OSError as exc:
        raise MeasurementsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeasurementsError(f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    return measurements_from(document, str(path))


def measurements_from(document: object, source: str) -> Measurements:
    overhead = document.get("overhead") if isinstance(document, Mapping) else None
    if not isinstance(overhead, Mapping):
        raise MeasurementsError(
            f'{source} has no "overhead" section (what telemetry costs per request); record it with {RECORD_HINT}'
        )

    def lookup(*keys: str) -> object:
        node: object = overhead
        for depth, key in enumerate(keys):
            if not isinstance(node, Mapping) or key not in node:
                missing = ".".join(keys[: depth + 1])
                raise MeasurementsError(f"{source}: overhead.{missing} is missing; record it with {RECORD_HINT}")
            node = node[key]
        return node

    def positive(*keys: str) -> float:
        value = lookup(*keys)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise MeasurementsError(
                f"{source}: overhead.{'.'.join(keys)} must be a number above 0, got {value!r}; "
                f"record it again with {RECORD_HINT}"
            )
        return float(value)

    def median(measure: str, mode: str) -> float:
        return positive("summary", measure, mode, "median")

    # traces mode exports spans only, so its bytes per span; the default mode's bytes less its spans' are its logs.
    span_bytes = median("bytes_per_request", "traces") / median("spans_per_request", "traces")
    spans, logs = median("spans_per_request", MODE), median("logs_per_request", MODE)
    log_bytes = (median("bytes_per_request", MODE) - spans * span_bytes) / logs
    if log_bytes <= 0:
        raise MeasurementsError(
            f"{source}: overhead.summary.bytes_per_request.{MODE} is no more than its spans' bytes, so its log "
            f"records cannot be sized; record it again with {RECORD_HINT}"
        )
    instance_rps = positive("capacity", MODE, "max_sustained_rps")
    stepped = lookup("capacity", MODE)
    assert isinstance(stepped, Mapping)  # positive() went through it

    if "series_per_instance" not in overhead:
        raise MeasurementsError(
            f"{source}: overhead.series_per_instance is missing: the Prometheus series each service's /metrics "
            f"exposes (one instance, after a run) have not been measured, and metrics scale with them; record them "
            f"with {RECORD_HINT}"
        )
    series: dict[str, int] = {}
    for service in SERVICES:
        count = positive("series_per_instance", service)
        if not count.is_integer():
            raise MeasurementsError(
                f"{source}: overhead.series_per_instance.{service} must be a whole number, got {count}"
            )
        series[service] = int(count)
    return Measurements(
        source=source,
        recorded_at=str(overhead.get("recorded_at", "unknown")),
        spans_per_request=spans,
        logs_per_request=logs,
        span_bytes=span_bytes,
        log_bytes=log_bytes,
        instance_rps=instance_rps,
        instance_rps_is_limit=bool(stepped.get("limit_reached", True)),
        series_per_instance=series,
    )


# --- the model ---


def _replicas(load: float, per_replica: float, minimum: int = 1) -> int:
    # The small slack keeps float noise (60e6 / 6e6 = 10.000000000000002) from adding a replica.
    return max(minimum, math.ceil(load / per_replica - 1e-9))


def tempo_components(peak_bytes_per_s: float, peak_spans_per_s: float) -> dict[str, int]:
    if peak_bytes_per_s < TEMPO_MONOLITHIC_BYTES_S and peak_spans_per_s < TEMPO_MONOLITHIC_SPANS_S:
        return {"monolithic": 1}
    live_stores = _replicas(peak_bytes_per_s, TEMPO_BYTES_S_PER_LIVE_STORE)
    return {
        "distributor": _replicas(peak_bytes_per_s, TEMPO_BYTES_S_PER_DISTRIBUTOR),
        "live-store": live_stores,
        "block-builder": live_stores,
        "querier": _replicas(peak_bytes_per_s, TEMPO_BYTES_S_PER_QUERIER),
        "query-frontend": TEMPO_QUERY_FRONTENDS,
    }


def loki_components(bytes_per_day: float) -> dict[str, int]:
    if bytes_per_day <= LOKI_MONOLITHIC_BYTES_DAY:
        return {"monolithic": 1}
    for below, replicas in LOKI_TIERS:
        if bytes_per_day < below:
            return dict(replicas)
    times = _replicas(bytes_per_day, LOKI_TOP_TIER_BYTES_DAY)
    return {name: count if name == "compactor" else count * times for name, count in LOKI_TOP_TIER.items()}


def mimir_components(active_series: int, samples_per_s: float, replication_factor: int) -> dict[str, int]:
    return {
        "distributor": _replicas(samples_per_s, MIMIR_SAMPLES_S_PER_DISTRIBUTOR),
        "ingester": _replicas(
            active_series * replication_factor, MIMIR_IN_MEMORY_SERIES_PER_INGESTER, replication_factor
        ),
        "compactor": _replicas(active_series, MIMIR_SERIES_PER_COMPACTOR),
    }


def _signal(bytes_per_s: float, peak_ratio: float, compression: float, days: float) -> Signal:
    per_day = bytes_per_s * SECONDS_PER_DAY
    return Signal(bytes_per_s, bytes_per_s * peak_ratio, per_day, per_day / compression * days)


def plan(users: int, measured: Measurements, assumed: Assumptions) -> Step:
    """One row: what `users` users cost in telemetry, and what the backends need for it."""
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    requests_per_s = users * assumed.requests_per_user / SECONDS_PER_DAY
    peak = requests_per_s * assumed.peak_ratio
    spans = requests_per_s * measured.spans_per_request
    kept = spans * assumed.kept_share
    per_request = measured.logs_per_request if assumed.logs_per_request is None else assumed.logs_per_request
    records = requests_per_s * per_request
    # Metrics scale with the fleet, not with users: the fleet is sized for the peak (no autoscaling), and each
    # instance exposes its own series whatever its traffic.
    instances = _replicas(peak, measured.instance_rps)
    series = instances * measured.series_total
    samples = series / assumed.scrape_interval_s
    stored_per_s = samples * assumed.bytes_per_sample
    traces = _signal(kept * measured.span_bytes, assumed.peak_ratio, assumed.trace_compression, assumed.traces_days)
    logs = _signal(records * measured.log_bytes, assumed.peak_ratio, assumed.log_compression, assumed.logs_days)
    metrics = _signal(stored_per_s, 1.0, 1.0, assumed.metrics_days)
    return Step(
        users=users,
        requests_per_s=requests_per_s,
        peak_requests_per_s=peak,
        spans_per_s=spans,
        kept_spans_per_s=kept,
        log_records_per_s=records,
        instances=instances,
        series=series,
        samples_per_s=samples,
        traces=traces,
        logs=logs,
        metrics=metrics,
        components={
            "tempo": tempo_components(traces.peak_bytes_per_s, kept * assumed.peak_ratio),
            "loki": loki_components(logs.bytes_per_day),
            "mimir": mimir_components(series, samples, assumed.replication_factor),
        },
    )


# --- command-line values ---

_USERS = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([kmgb]?)\s*", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_users(raw: str) -> tuple[int, ...]:
    """'100,10k,1M,100M' as user counts (k thousand, M million, G or B billion), each from 1 to 10G."""
    steps = []
    for part in raw.split(","):
        match = _USERS.fullmatch(part)
        if match is None:
            raise ValueError(f"expected user counts such as 100,10k,1M,100M, got {part.strip()!r}")
        value = float(match.group(1)) * _SCALE[match.group(2).lower()]
        if not (1 <= value <= MAX_USERS and value.is_integer()):
            raise ValueError(f"each user count must be a whole number from 1 to 10G, got {part.strip()!r}")
        steps.append(int(value))
    return tuple(steps)


def positive(maximum: float) -> Callable[[str], float]:
    """A number above 0 and at most `maximum`."""

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise ValueError(f"must be above 0 and at most {maximum:g}, got {raw.strip()}")
        return value

    return parse


# --- output ---


def _significant(value: float) -> str:
    if float(value).is_integer() and value < 1000:  # counts and whole days: 1, 31, 260
        return str(int(value))
    if value < 1:
        return f"{value:.2g}"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def number(value: float) -> str:
    """A count or rate for the table: 0.058, 5.8, 579, 1.7k, 174k, 2.8M."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return _significant(value / scale) + suffix
    return _significant(value)


def size(value: float) -> str:
    """Bytes in decimal units, as storage is billed: 340 B, 8.9 KB, 52 GB, 1.2 PB."""
    units = ("B", "KB", "MB", "GB", "TB", "PB", "EB")
    index = 0
    while value >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{_significant(value)} {units[index]}"


def _users(count: int) -> str:
    for scale, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if count >= scale and count % scale == 0:
            return f"{count // scale}{suffix}"
    return number(count)


ABBREVIATIONS = {
    "distributor": "d",
    "ingester": "i",
    "live-store": "ls",
    "block-builder": "bb",
    "querier": "q",
    "query-frontend": "qf",
    "index-gateway": "ig",
    "compactor": "c",
}


def _components(replicas: Mapping[str, int]) -> str:
    if "monolithic" in replicas:
        return "monolithic"
    return " ".join(f"{ABBREVIATIONS[name]}{count}" for name, count in replicas.items())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left_from: int) -> list[str]:
    """Columns from `left_from` on are text (left-aligned), the ones before it numbers (right-aligned)."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        aligned = [
            cell.ljust(width) if index >= left_from else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(aligned).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def traffic_table(steps: Sequence[Step]) -> list[str]:
    headers = (
        "users",
        "req/s",
        "peak req/s",
        "instances",
        "spans/s",
        "kept/s",
        "logs/s",
        "series",
        "samples/s",
        "traces peak",
        "logs peak",
        "traces/day",
        "logs/day",
        "metrics/day",
    )
    rows = [
        (
            _users(step.users),
            number(step.requests_per_s),
            number(step.peak_requests_per_s),
            number(step.instances),
            number(step.spans_per_s),
            number(step.kept_spans_per_s),
            number(step.log_records_per_s),
            number(step.series),
            number(step.samples_per_s),
            size(step.traces.peak_bytes_per_s) + "/s",
            size(step.logs.peak_bytes_per_s) + "/s",
            size(step.traces.bytes_per_day),
            size(step.logs.bytes_per_day),
            size(step.metrics.bytes_per_day),
        )
        for step in steps
    ]
    return _table(headers, rows, left_from=len(headers))


def storage_table(steps: Sequence[Step], assumed: Assumptions) -> list[str]:
    headers = (
        "users",
        f"traces ({number(assumed.traces_days)} d)",
        f"logs ({number(assumed.logs_days)} d)",
        f"metrics ({number(assumed.metrics_days)} d)",
        "total",
        "Tempo",
        "Loki",
        "Mimir",
    )
    rows = [
        (
            _users(step.users),
            size(step.traces.stored_bytes),
            size(step.logs.stored_bytes),
            size(step.metrics.stored_bytes),
            size(step.traces.stored_bytes + step.logs.stored_bytes + step.metrics.stored_bytes),
            _components(step.components["tempo"]),
            _components(step.components["loki"]),
            _components(step.components["mimir"]),
        )
        for step in steps
    ]
    return _table(headers, rows, left_from=5)


def assumption_lines(measured: Measurements, assumed: Assumptions) -> list[str]:
    """What the numbers rest on: measured, assumed (with the option that changes it) and the sizing rules."""
    per_request = measured.logs_per_request if assumed.logs_per_request is None else assumed.logs_per_request
    series = ", ".join(f"{service} {count}" for service, count in measured.series_per_instance.items())
    at_least = "" if measured.instance_rps_is_limit else "at least (the benchmark's steps ended first) "
    sampling = (
        "keeps every trace (--sampling 1, as the lab does)"
        if assumed.kept_share >= 1
        else f"keeps every error or slow trace ({assumed.error_slow_share:.0%} of traces, --error-slow-share: "
        f"server errors at `shoplab gate`'s 1 % budget and the slowest 1 %) and {assumed.sampling:.0%} of the others "
        f"(--sampling): {assumed.kept_share:.1%} of spans reach Tempo; the tail-sampling collectors in front of it "
        f"still receive them all"
    )
    logs = (
        f"{per_request:.2f} log records per request, as measured at LOG_LEVEL=info (one access line a request, plus "
        f"slow queries and events); --logs-per-request for another level"
        if assumed.logs_per_request is None
        else f"{per_request:g} log records per request (--logs-per-request; measured at LOG_LEVEL=info: "
        f"{measured.logs_per_request:.2f})"
    )
    sources = SOURCES
    paragraphs = [
        ("Measured", f"{measured.source}, section overhead, recorded {measured.recorded_at}, mode {MODE} (the lab's):"),
        (
            "",
            f"{measured.spans_per_request:.2f} spans and {measured.logs_per_request:.2f} log records per request; "
            f"{measured.span_bytes:.0f} B of OTLP per span (the traces mode's bytes over its spans) and "
            f"{measured.log_bytes:.0f} B per log record ({MODE}'s bytes less its spans', over its records).",
        ),
        (
            "",
            f"Prometheus series per instance: {series} ({measured.series_total} in all). One instance of the shop "
            f"(each service one gunicorn, all on one core) sustains {at_least}{measured.instance_rps:g} req/s "
            f"(overhead.capacity.{MODE}: p95 under 500 ms, no errors).",
        ),
        ("Assumed", "(change them with the options):"),
        (
            "",
            f"{assumed.requests_per_user:g} requests per user a day (--requests-per-user): one visit of about three "
            f"minutes at the pace of the lab's Locust journeys (10 users make about 3 requests/s); the busiest hour "
            f"carries {assumed.peak_ratio:g}x the day's average (--peak-ratio).",
        ),
        ("", f"Tail sampling {sampling}."),
        ("", logs + "."),
        (
            "",
            f"Retention (--traces-days, --logs-days, --metrics-days): traces {assumed.traces_days:g} d, logs "
            f"{assumed.logs_days:g} d, metrics {assumed.metrics_days:g} d (the lab's: tempo.yaml, loki.yaml, the "
            f"compose file's Prometheus).",
        ),
        (
            "",
            f"Instances: enough of each service for the peak at the measured rate, kept all day (no autoscaling, "
            f"which would store fewer samples but churn series); series = instances x series per instance, the "
            f"shop's own /metrics only (no node or Kubernetes metrics); scraped every {assumed.scrape_interval_s:g} s "
            f"(--scrape-interval; the lab scrapes the shop every 5 s).",
        ),
        (
            "",
            f"Storage: one copy in object storage, compressed. Tempo 3 writes blocks once (replication factor 1; Kafka "
            f"carries durability: {sources['tempo_kafka']}); Mimir's compactor merges the ingesters' replicas; Loki's "
            f"ingesters skip chunks already stored ({sources['loki_dedupe']}). Traces "
            f"{assumed.trace_compression:g}x (--trace-compression; Tempo: zstd cuts storage to ~15 %, measured on its "
            f"v2 blocks, {sources['tempo_compression']}). Logs {assumed.log_compression:g}x (--log-compression; "
            f"Loki's benchmark logs compress 9x with snappy, 13x with lz4, {sources['loki_compression']}; this "
            f"shop's records each carry a 16-byte trace id and an 8-byte span id that do not compress, a tenth of a "
            f"record, so about half that). Metrics {assumed.bytes_per_sample:g} B per sample (--bytes-per-sample; "
            f"'around 1-2 bytes per sample', {sources['prometheus_storage']}; Mimir's guide assumes 2). Traces and "
            "logs per day are OTLP bytes received; metrics per day are bytes stored. Units are decimal (1 GB = 10^9 "
            "B).",
        ),
        ("Sizing rules", "(Grafana's guidance; rates at the peak hour, daily volumes over the day):"),
        (
            "",
            f"Tempo 3 ({sources['tempo_size']}): 1 distributor per 10 MB/s received, 1 live-store per 6 MB/s "
            f"(docs: 6-10), 1 block-builder per partition = per live-store (one zone; {sources['tempo_kafka']}), 1 "
            f"querier per 1 MB/s (docs: 1-2), 2 query-frontends; monolithic below 25 MB/s and 55k spans/s (docs: "
            f"25-35 MB/s or 55k-80k spans/s, {sources['tempo_modes']}).",
        ),
        (
            "",
            f"Loki ({sources['loki_size']}): base replicas of the tier of the daily volume: below 3 TB/day 6 "
            f"ingesters, 4 distributors, 10 queriers, 2 query-frontends, 4 index gateways, 1 compactor; 3-30 TB/day "
            f"90, 40, 100, 8, 10, 1; 30 TB/day 150, 100, 250, 16, 20, 1, again per further 30 TB/day (one compactor); "
            f"monolithic up to 20 GB/day ({sources['loki_modes']}).",
        ),
        (
            "",
            f"Mimir ({sources['mimir_capacity']}): ingesters 1 core per 300,000 series in memory (active x "
            f"replication factor {assumed.replication_factor}, --replication-factor), distributors 1 core per 25,000 "
            f"samples/s, run as capped-large.yaml's 5-core ingesters and 2.8-core distributors at 70 % "
            f"({sources['mimir_capped_large']}): 1 ingester per 1.05M in-memory series (at least the replication "
            f"factor), 1 distributor per 49,000 samples/s; 1 compactor per 20M active series.",
        ),
        (
            "",
            "Columns: d distributor, i ingester, ls live-store, bb block-builder, q querier, qf query-frontend, ig "
            "index gateway, c compactor. Not sized: what depends on queries rather than ingest (Mimir's queriers, "
            "store-gateways, caches), the tail-sampling collectors, Kafka.",
        ),
    ]
    lines = []
    for title, text in paragraphs:
        lines.extend(
            textwrap.wrap(
                f"{title} {text}" if title else text,
                width=118,
                initial_indent="" if title else "  - ",
                subsequent_indent="    ",
                break_long_words=False,  # URLs stay whole
                break_on_hyphens=False,
            )
        )
    return lines


def render(steps: Sequence[Step], measured: Measurements, assumed: Assumptions) -> str:
    return "\n".join(
        [
            "Traffic and ingest (per second: the day's average unless marked peak, the busiest hour)",
            *traffic_table(steps),
            "",
            "Storage at retention and components (sized for the peak hour)",
            *storage_table(steps, assumed),
            "",
            *assumption_lines(measured, assumed),
        ]
    )


def to_json(steps: Sequence[Step], measured: Measurements, assumed: Assumptions) -> dict[str, Any]:
    return {
        "measurements": {**asdict(measured), "series_total": measured.series_total},
        "assumptions": {**asdict(assumed), "kept_share": assumed.kept_share},
        "sources": SOURCES,
        "steps": [asdict(step) for step in steps],
    }
