"""What telemetry costs the shop: the same load on a dark shop, with traces, with traces and logs, and as the lab runs.

    python bench/overhead.py                                  # 3 rounds of 4 modes, 60 s each (about 35 min)
    python bench/overhead.py --rounds 1 --seconds 20 --settle 5
    python bench/overhead.py --capacity                       # ... and each mode's highest sustained rate
    python bench/overhead.py --traces-endpoint http://127.0.0.1:4318/v1/traces \\
        --logs-endpoint http://127.0.0.1:3100/otlp/v1/logs  # real backends instead of the test double
    python bench/overhead.py --record                         # ... and keep the result in bench/baseline.json

Modes, each on a fresh shop (shoplib's Supervisor, fresh data, the same seed sizes):
  dark         OTEL_SDK_DISABLED=true (no SDK, no server or client spans), LOG_LEVEL=warning
  traces       spans over OTLP, no OTLP logs, LOG_LEVEL=warning
  traces+logs  spans and log records over OTLP, LOG_LEVEL=warning: the log pipeline, carrying warnings and errors
  lab          what compose.yaml gives every service (x-shop-env, read from the file): spans and log records over
               OTLP at LOG_LEVEL=info, one access line a request, JSON lines on stdout too
Prometheus metrics are recorded in every mode (there is no switch), so they are part of the baseline, not of
the overhead. Modes alternate in rounds (dark, traces, traces+logs, lab, dark, ...) so machine noise hits all alike;
the tables show the median and the spread (min-max) over the rounds, and each mode's median over dark's.

Load: one Locust process with the shop's journeys (locustfiles/locustfile.py) at a fixed moderate load
(--users at --think-time-scale), measured over --seconds after --settle. The shop's processes (every gunicorn
master and worker) are pinned to one CPU, this process (with the OTLP receiver's thread) and Locust to another,
so the load generator and the receiver do not take the shop's CPU; with fewer than 2 CPUs nothing is pinned.
Per request: the shop's CPU (each service's process tree, over the requests that service served by its own
http_request_duration_seconds_count), spans and log records exported, and OTLP body bytes received (only with
the built-in receiver). --capacity also steps the users up as bench/load_capacity.py does (p95 < 500 ms, no
errors), in every round, in each mode's shop after its measured window: one run's limit moved by up to a third
between runs on this lab's machine, so the median over the rounds is reported (and is what `shoplab capacity`
scales by), with the range.

Not a test (never part of `make test`): the numbers belong to the machine. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the OTLP receiver

from load_capacity import (  # noqa: E402
    BASELINE,
    SHOPPERS,
    SPAWN_RATE,
    RunningShop,
    ShopLog,
    Step,
    cpu_seconds,
    locust_errors,
    measure,
    otlp_backends,
    record,
    running_locust,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse  # noqa: E402

from otlp_receiver import OtlpReceiver  # noqa: E402
from shoplib.services import SERVICES  # noqa: E402
from shoplib.supervisor import Supervisor, poll_until  # noqa: E402

KEY = "overhead"  # the section of bench/baseline.json
COMPOSE = REPO / "compose.yaml"
LAB_DEFAULT = "lab"


def lab_environment(compose: Path = COMPOSE) -> dict[str, str]:
    """The telemetry settings compose.yaml gives every service (its x-shop-env), so the `lab` mode measures what the
    lab runs, not a copy of it: the OTEL_* variables but the backends' addresses (the benchmark brings its own
    receiver), and LOG_LEVEL with `${LOG_LEVEL:-info}` read as its default."""
    shared = yaml.safe_load(compose.read_text())["x-shop-env"]
    environment = {
        name: str(value)
        for name, value in shared.items()
        if name.startswith("OTEL_") and not name.endswith("_ENDPOINT")
    }
    level = re.fullmatch(r"\$\{LOG_LEVEL:-(\w+)\}|(\w+)", str(shared["LOG_LEVEL"]))
    if level is None:
        raise ValueError(
            f"{compose}: x-shop-env LOG_LEVEL {shared['LOG_LEVEL']!r} is neither a level nor ${{LOG_LEVEL:-level}}"
        )
    environment["LOG_LEVEL"] = level[1] or level[2]
    return {"OTEL_SDK_DISABLED": "false", "OTEL_LOGS_EXPORTER": "none", **environment}


# Each mode's whole telemetry environment: nothing telemetry-related comes from the caller's shell.
MODES: dict[str, dict[str, str]] = {
    # Exporters off as well, so nothing depends on how the SDK reads them when it is disabled.
    "dark": {
        "OTEL_SDK_DISABLED": "true",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "LOG_LEVEL": "warning",
    },
    "traces": {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "LOG_LEVEL": "warning",
    },
    "traces+logs": {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "LOG_LEVEL": "warning",
    },
    LAB_DEFAULT: lab_environment(),
}
SEED_PRODUCTS = 600  # the lab's catalog (the journeys pick product ids from it)
DEFAULT_SEED_ORDERS = 250_000  # the lab's order history
CAPACITY_STEP_S, CAPACITY_SETTLE_S = 30.0, 8.0  # as `make bench`
# From a moderate load up, 15 users apart where the modes reach their limits: a larger jump logs more users in at once,
# and their logins, queued behind auth's password hashing, fail a step whose latency is fine (60 users at once did,
# and 30 apart favoured whichever mode happened to pass the step below its limit).
CAPACITY_STEPS = "120,150,180,210,225,240,255,270,285,300,315,330,345,360,390"
SETTINGS_RECORDED = ("rounds", "users", "think_time_scale", "seconds", "settle", "seed_orders", "capacity")


class CountingReceiver(OtlpReceiver):
    """The tests' OTLP receiver, answering without decoding or keeping anything: over long runs storing would
    grow without bound, and decoding would spend CPU beside Locust in the modes that export (not in dark).
    What it counts is the bytes received (OtlpReceiver.received_bytes)."""

    def _store_traces(self, payload: bytes) -> bytes:
        return bytes(ExportTraceServiceResponse().SerializeToString())

    def _store_logs(self, payload: bytes) -> bytes:
        return bytes(ExportLogsServiceResponse().SerializeToString())

    def bytes_received(self) -> int:
        with self._lock:
            return sum(self.received_bytes.values())


@dataclass(frozen=True)
class Shop:
    trees: dict[str, list[psutil.Process]]  # each service's gunicorn master and its workers
    urls: dict[str, str]
    log: ShopLog

    @property
    def processes(self) -> list[psutil.Process]:
        return [process for tree in self.trees.values() for process in tree]


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment: CPU seconds and requests served per service, the shop's telemetry counters."""

    at: float
    cpu_s: dict[str, float]
    served: dict[str, float]
    series: dict[str, int]  # samples each service's /metrics exposes: its Prometheus series
    telemetry: dict[tuple[str, str, str], float]  # (metric, signal, outcome or reason) summed over services
    wire_bytes: int | None


@dataclass(frozen=True)
class Pinning:
    shop_cpu: int
    rest_cpu: int


def pinning() -> Pinning | None:
    allowed = sorted(os.sched_getaffinity(0))
    return Pinning(allowed[0], allowed[1]) if len(allowed) >= 2 else None


def pin(process: psutil.Process, cpu: int) -> int:
    """Every thread of `process` onto `cpu`; how many. sched_setaffinity on a pid moves only that thread, and
    threads already started (gunicorn's, the exporters') keep their own mask, so each is set by its id."""
    pinned = 0
    with suppress(psutil.NoSuchProcess):
        for thread in process.threads():
            with suppress(OSError):  # a thread may end between the listing and the call
                os.sched_setaffinity(thread.id, {cpu})
                pinned += 1
    return pinned


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


@contextmanager
def running_shop(workdir: Path, environ: dict[str, str]) -> Iterator[Shop]:
    """load_capacity.running_shop with an environment per mode, and each service's processes apart."""
    stdout_path = workdir / "shop.stdout"
    with stdout_path.open("wb") as out, Supervisor(workdir / "data", environ=environ, stdout=out) as shop:
        trees = {service: tree(psutil.Process(process.pid)) for service, process in shop.processes.items()}
        yield Shop(trees, shop.urls, ShopLog(stdout_path))


def shop_environ(mode: str, seed_orders: int, endpoints: dict[str, str]) -> dict[str, str]:
    # Nothing telemetry-related from the caller's shell: each mode says exactly what it runs with.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "LOG_LEVEL"}
    env.update(MODES[mode])
    env.update(endpoints)
    env |= {
        "SHOP_ENV": "dev",
        "SEED_PRODUCTS": str(SEED_PRODUCTS),
        "SEED_ORDERS": str(seed_orders),
    }
    return env


def scrape(url: str) -> tuple[float, int, dict[tuple[str, str, str], float]]:
    """Requests this service served (infrastructure paths are not counted by the shop), the series it exposes, and
    its telemetry counters: (metric, signal, outcome or reason) for exported and dropped items, (metric, signal, "")
    for the queue."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    served = 0.0
    series = 0
    telemetry: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        series += len(family.samples)
        for sample in family.samples:
            if sample.name == "http_request_duration_seconds_count":
                served += sample.value
            elif sample.name in ("telemetry_exported_items_total", "telemetry_dropped_items_total"):
                key = (sample.name, sample.labels["signal"], sample.labels.get("outcome") or sample.labels["reason"])
                telemetry[key] = telemetry.get(key, 0.0) + sample.value
            elif sample.name == "telemetry_queued_items":
                key = (sample.name, sample.labels["signal"], "")
                telemetry[key] = telemetry.get(key, 0.0) + sample.value
    return served, series, telemetry


def snapshot(shop: Shop, receiver: CountingReceiver | None) -> Snapshot:
    cpu_s = {service: cpu_seconds(processes) for service, processes in shop.trees.items()}
    served: dict[str, float] = {}
    series: dict[str, int] = {}
    telemetry: dict[tuple[str, str, str], float] = {}
    for service, url in shop.urls.items():
        served[service], series[service], counters = scrape(url)
        for key, value in counters.items():
            telemetry[key] = telemetry.get(key, 0.0) + value
    return Snapshot(time.monotonic(), cpu_s, served, series, telemetry, receiver.bytes_received() if receiver else None)


def rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def set_users(api: str, users: int) -> None:
    # Steady reads the user count and spawn rate from the form on every tick, so one POST changes the load.
    requests.post(f"{api}/swarm", data={"user_count": users, "spawn_rate": SPAWN_RATE}, timeout=10).raise_for_status()
    poll_until(
        lambda: requests.get(f"{api}/stats/requests", timeout=5).json()["user_count"] == users, 120, 0.25, "users"
    )


# Requests whose latency is reported apart: one that crosses one service, and an order, which crosses four.
LATENCY_PROBES = {"one_hop": ("GET", "catalog /products/[id]"), "order": ("POST", "checkout /orders")}


def probe_latencies(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """p50 (ms, Locust's, whole milliseconds) of each of LATENCY_PROBES over the window; None if none was sent."""
    by_request = {(row.get("method"), row.get("name")): row for row in rows}
    result: dict[str, float | None] = {}
    for probe, request in LATENCY_PROBES.items():
        row = by_request.get(request)
        result[f"p50_ms.{probe}"] = float(row["median_response_time"]) if row and row["num_requests"] else None
    return result


def measure_window(
    api: str, locust: psutil.Process, shop: Shop, receiver: CountingReceiver | None, args: argparse.Namespace
) -> dict[str, float | None]:
    """Settle at --users, then measure over --seconds: one flat dict of measures (see TABLES)."""
    requests.post(f"{api}/stats/reset", timeout=10).raise_for_status()
    set_users(api, args.users)
    time.sleep(args.settle)
    _stats, settling_errors, _lines = locust_errors(api)  # logins and the first requests count too

    requests.post(f"{api}/stats/reset", timeout=10).raise_for_status()
    locust_cpu = cpu_seconds([locust])
    before = snapshot(shop, receiver)
    time.sleep(args.seconds)
    after = snapshot(shop, receiver)
    locust_cpu = cpu_seconds([locust]) - locust_cpu
    stats, window_errors, _lines = locust_errors(api)
    elapsed = after.at - before.at
    total = stats["stats"][-1]  # the "Aggregated" row
    sent = total["num_requests"]

    def telemetry(metric: str, signal: str | None, label: str) -> float:
        keys = {key for key in (*before.telemetry, *after.telemetry) if key[0] == metric and key[2] == label}
        keys = {key for key in keys if signal is None or key[1] == signal}
        return sum(after.telemetry.get(key, 0.0) - before.telemetry.get(key, 0.0) for key in keys)

    def per_request(value: float) -> float | None:  # None: not measured, kept out of medians and JSON's NaN
        return value / sent if sent else None

    result: dict[str, float | None] = {
        "rps": sent / elapsed,
        "p50_ms": float(total["median_response_time"] or 0),
        "p95_ms": float(total["response_time_percentile_0.95"] or 0),
        **probe_latencies(stats["stats"]),
        "errors": float(settling_errors + window_errors),
        "locust_cpu_pct": 100 * locust_cpu / elapsed,
        "spans_per_request": per_request(telemetry("telemetry_exported_items_total", "traces", "success")),
        "logs_per_request": per_request(telemetry("telemetry_exported_items_total", "logs", "success")),
        "bytes_per_request": (
            per_request(after.wire_bytes - before.wire_bytes)
            if after.wire_bytes is not None and before.wire_bytes is not None
            else None
        ),
        "dropped": sum(telemetry("telemetry_dropped_items_total", None, r) for r in ("queue_full", "already_shutdown")),
        "export_failures": telemetry("telemetry_exported_items_total", None, "failure"),
    }
    shop_cpu, shop_rss = 0.0, 0.0
    for service in shop.trees:
        cpu = after.cpu_s[service] - before.cpu_s[service]
        served = after.served[service] - before.served[service]
        shop_cpu += cpu
        result[f"cpu_ms_per_request.{service}"] = 1000 * cpu / served if served else None
        result[f"rss_mib.{service}"] = rss = rss_mib(shop.trees[service])
        result[f"series.{service}"] = float(after.series[service])
        shop_rss += rss
    result["cpu_ms_per_request.shop"] = per_request(1000 * shop_cpu)  # the whole shop per request Locust sent
    result["shop_cpu_pct"] = 100 * shop_cpu / elapsed
    result["rss_mib.shop"] = shop_rss
    return result


@contextmanager
def shop_and_locust(
    mode: str, args: argparse.Namespace, workdir: Path, endpoints: dict[str, str], pins: Pinning | None
) -> Iterator[tuple[Shop, psutil.Process, str]]:
    """A fresh shop in `mode` and a Locust for it, pinned; both gone (with the shop's data) on exit."""
    data = Path(tempfile.mkdtemp(prefix=f"{mode.replace('+', '-')}-", dir=workdir))
    try:
        with (
            running_shop(data, shop_environ(mode, args.seed_orders, endpoints)) as shop,
            running_locust(SHOPPERS, shop.urls, args.think_time_scale, data) as (locust, api),
        ):
            if pins is not None:
                threads = sum(pin(process, pins.shop_cpu) for process in shop.processes)
                locust_threads = pin(locust, pins.rest_cpu)
                print(
                    f"    pinned: shop ({len(shop.processes)} processes, {threads} threads) -> CPU {pins.shop_cpu}; "
                    f"Locust (pid {locust.pid}, {locust_threads} threads) -> CPU {pins.rest_cpu}",
                    flush=True,
                )
            yield shop, locust, api
    finally:
        shutil.rmtree(data, ignore_errors=True)


def capacity(api: str, locust: psutil.Process, shop: Shop, steps: list[int]) -> dict[str, Any]:
    """load_capacity's stepping: up until the first step over p95 500 ms or with errors; the best before it."""
    stepped = RunningShop(shop.processes, shop.urls, shop.log)
    measured: list[Step] = []
    for users in steps:
        step = measure(api, locust, stepped, users=users, settle_s=CAPACITY_SETTLE_S, step_s=CAPACITY_STEP_S)
        verdict = "ok" if step.sustained else f"over the limit ({step.error_count} errors)"
        print(f"    {users:>4} users: {step.rps:>6} req/s, p95 {step.p95_ms:>5.0f} ms  {verdict}", flush=True)
        measured.append(step)
        if not step.sustained:
            break
    sustained = [step for step in measured if step.sustained]
    best = max(sustained, key=lambda step: step.rps) if sustained else None
    return {
        "max_sustained_rps": best.rps if best else 0.0,
        "at_users": best.users if best else 0,
        "limit_reached": not measured[-1].sustained,
        "steps": [{"users": s.users, "rps": s.rps, "p95_ms": s.p95_ms, "errors": s.error_count} for s in measured],
    }


def over_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A mode's highest sustained rate over the rounds: their median (what `shoplab capacity` scales by), range and
    each round's steps; at_users is the round nearest the median's."""
    rates = [found["max_sustained_rps"] for found in rounds]
    middle = statistics.median(rates)
    nearest = min(rounds, key=lambda found: abs(found["max_sustained_rps"] - middle))
    return {
        "max_sustained_rps": round(middle, 1),
        "min": min(rates),
        "max": max(rates),
        "at_users": nearest["at_users"],
        "limit_reached": all(found["limit_reached"] for found in rounds),
        "rounds": rounds,
    }


# Tables: title, then (row label, measure key) pairs, the number format, and whether a ratio to dark makes sense.
TABLES: list[tuple[str, list[tuple[str, str]], str, bool]] = [
    ("requests/s (Locust)", [("all", "rps")], "{:.1f}", True),
    (
        "latency (ms; Locust's p50 is in whole ms)",
        [
            ("p50", "p50_ms"),
            ("p95", "p95_ms"),
            ("p50 one hop", "p50_ms.one_hop"),  # GET catalog /products/[id]: catalog alone
            ("p50 order", "p50_ms.order"),  # POST checkout /orders: checkout, auth's token, catalog, payment
        ],
        "{:.0f}",
        True,
    ),
    ("errors (failures + exceptions, settling included)", [("all", "errors")], "{:.0f}", False),
    (
        "shop CPU ms per request (each service: over the requests it served; shop: over the requests Locust sent)",
        [(s, f"cpu_ms_per_request.{s}") for s in (*SERVICES, "shop")],
        "{:.2f}",
        True,
    ),
    ("shop CPU % of one core", [("shop", "shop_cpu_pct")], "{:.0f}", True),
    ("RSS at the end (MiB, master + worker)", [(s, f"rss_mib.{s}") for s in (*SERVICES, "shop")], "{:.0f}", True),
    (
        "exported per request (telemetry_exported_items_total success / requests sent)",
        [("spans", "spans_per_request"), ("log records", "logs_per_request")],
        "{:.2f}",
        False,
    ),
    ("OTLP bytes per request (bodies received by the receiver)", [("all", "bytes_per_request")], "{:.0f}", False),
    (
        "lost telemetry (items over the window)",
        [("dropped", "dropped"), ("export failures", "export_failures")],
        "{:.0f}",
        False,
    ),
    ("Locust CPU % (of its own core)", [("locust", "locust_cpu_pct")], "{:.0f}", False),
    ("Prometheus series each service exposes at the end", [(s, f"series.{s}") for s in SERVICES], "{:.0f}", False),
]


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """measure -> mode -> median, min, max over the rounds; a measure not taken (None) is left out."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for key, value in run["measures"].items():
            if value is not None:
                values.setdefault(key, {}).setdefault(run["mode"], []).append(value)
    return {
        key: {
            mode: {"median": statistics.median(taken), "min": min(taken), "max": max(taken)}
            for mode, taken in by_mode.items()
        }
        for key, by_mode in values.items()
    }


def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def progress(m: dict[str, float | None]) -> str:
    return (
        f"{number(m['rps'], '{:.1f}')} req/s, p50 {number(m['p50_ms'], '{:.0f}')} ms, "
        f"p95 {number(m['p95_ms'], '{:.0f}')} ms, {number(m['errors'], '{:.0f}')} errors; shop "
        f"{number(m['cpu_ms_per_request.shop'], '{:.2f}')} CPU ms/request ({number(m['shop_cpu_pct'], '{:.0f}')} % "
        f"of a core); {number(m['spans_per_request'], '{:.2f}')} spans, {number(m['logs_per_request'], '{:.2f}')} "
        f"log records, {number(m['bytes_per_request'], '{:.0f}')} OTLP bytes per request; Locust "
        f"{number(m['locust_cpu_pct'], '{:.0f}')} % CPU"
    )


def cell(stats: dict[str, float] | None, fmt: str) -> str:
    if not stats:
        return "-"
    median = fmt.format(stats["median"])
    if "min" not in stats or stats["min"] == stats["max"]:
        return median
    return f"{median} ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"


def ratio(stats: dict[str, float] | None, dark: dict[str, float] | None) -> str:
    if not stats or not dark or not dark.get("median"):
        return "-"
    return f"{stats['median'] / dark['median']:.2f}x"


def print_tables(summary: dict[str, Any], baseline: dict[str, Any] | None, rounds: int) -> None:
    modes = list(MODES)
    print(f"\nmedian (min-max) over {rounds} round(s); vs dark = the mode's median / dark's median")
    if baseline:
        print(f"'recorded' rows: the baseline of {baseline.get('recorded_at', '?')} (medians)")
    header = (
        f"{'':<16}" + "".join(f"{mode:>24}" for mode in modes) + "".join(f"{m + ' vs dark':>22}" for m in modes[1:])
    )
    for title, rows, fmt, ratios in TABLES:
        print(f"\n{title}\n{header}")
        for label, key in rows:
            for name, source in (("", summary), ("  recorded", (baseline or {}).get("summary"))):
                if source is None or (name and key not in source):
                    continue
                by_mode = source.get(key, {})
                cells = "".join(f"{cell(by_mode.get(mode), fmt):>24}" for mode in modes)
                versus = "".join(
                    f"{ratio(by_mode.get(mode), by_mode.get('dark')) if ratios else '':>22}" for mode in modes[1:]
                )
                print(f"{(name or label)[:16]:<16}{cells}{versus}")
    one_hop = summary.get("p50_ms.one_hop", {})
    dark = (one_hop.get("dark") or {}).get("median")
    if dark is not None:
        added = "  ".join(f"{mode} {one_hop[mode]['median'] - dark:+.0f} ms" for mode in modes[1:] if one_hop.get(mode))
        print(f"\nadded p50 per hop (GET catalog /products/[id], one service, less dark's; whole ms): {added}")


def print_capacity(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    dark = result.get("dark", {}).get("max_sustained_rps")
    rounds = len(next(iter(result.values()))["rounds"])
    print(f"\nhighest sustained rate (p95 < 500 ms, no errors): median (min-max) over {rounds} round(s)")
    for mode, found in result.items():
        note = "" if found["limit_reached"] else " (the steps ended first: at least this)"
        versus = f"  {found['max_sustained_rps'] / dark:.2f}x dark" if dark else ""
        spread = f" ({found['min']}-{found['max']})" if rounds > 1 else ""
        recorded = ((baseline or {}).get("capacity") or {}).get(mode, {}).get("max_sustained_rps")
        then = f"  recorded {recorded} req/s" if recorded is not None else ""
        print(
            f"{mode:>12}: {found['max_sustained_rps']} req/s{spread} at {found['at_users']} users{note}{versus}{then}"
        )


def positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected more than 0, got {raw!r}")
        return value

    return parse


def steps_list(raw: str) -> list[int]:
    try:
        steps = [int(users) for users in raw.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated user counts, got {raw!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"every step needs at least 1 user, got {raw!r}")
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive(int), default=3, help="rounds of the four modes (default 3)")
    parser.add_argument(
        "--users",
        type=positive(int),
        default=60,
        help="Locust users (default 60: a quarter of the shop's core, steadier than fewer)",
    )
    parser.add_argument("--think-time-scale", type=positive(float), default=0.2, help="SHOP_THINK_TIME_SCALE (0.2)")
    parser.add_argument("--seconds", type=positive(float), default=60, help="measured window per run (default 60)")
    parser.add_argument("--settle", type=positive(float), default=15, help="unmeasured time before it (default 15)")
    parser.add_argument(
        "--seed-orders",
        type=positive(int),
        default=DEFAULT_SEED_ORDERS,
        help=f"checkout's seeded order history, every mode alike (default {DEFAULT_SEED_ORDERS}, the lab's)",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="also each mode's highest sustained rate, in every round (long: 5-8 min a mode and round)",
    )
    parser.add_argument(
        "--steps", type=steps_list, default=CAPACITY_STEPS, help=f"users per --capacity step (default {CAPACITY_STEPS})"
    )
    parser.add_argument("--traces-endpoint", help="OTLP/HTTP traces URL (default: the tests' receiver)")
    parser.add_argument("--logs-endpoint", help="OTLP/HTTP logs URL (default: the tests' receiver)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw results here")
    parser.add_argument("--record", action="store_true", help=f"write the result under {KEY!r} in {BASELINE.name}")
    args = parser.parse_args(argv)
    for name in ("traces_endpoint", "logs_endpoint"):
        url = getattr(args, name)
        if url is not None and not url.startswith(("http://", "https://")):
            parser.error(f"--{name.replace('_', '-')}: expected an http(s) URL, got {url!r}")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json: no such folder {args.json.parent}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (a timeout, `kill`) unwinds like Ctrl-C, so the shops and Locusts this started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    pins = pinning()
    if pins is None:
        print(f"only {len(os.sched_getaffinity(0))} CPU here: nothing pinned, Locust shares the shop's CPU")
    else:
        # First, so everything this process starts (the receiver's thread, the shop, Locust) inherits it.
        threads = pin(psutil.Process(), pins.rest_cpu)
        print(f"pinned: this process (pid {os.getpid()}, {threads} thread(s)) -> CPU {pins.rest_cpu}")
    print("metrics: Prometheus metrics are recorded in every mode (no switch exists), dark included")

    baseline_all = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    baseline = baseline_all.get(KEY)
    with tempfile.TemporaryDirectory(prefix="shoplab-overhead-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        endpoints: dict[str, str] = {}
        receiver: CountingReceiver | None = None
        if not (args.traces_endpoint and args.logs_endpoint):
            receiver = CountingReceiver()
            receiver.start()
            stack.callback(receiver.stop)
            endpoints["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
            print(
                f"telemetry: the tests' OTLP receiver at {receiver.endpoint}, in this process (a test double, not "
                "Tempo or Loki: it answers at once and keeps nothing)"
            )
        endpoints |= otlp_backends(args.traces_endpoint, args.logs_endpoint)
        if receiver is None:
            print("bytes per request: not measured (the bytes go to real backends)")
        print(
            f"load: {args.users} users at think-time scale {args.think_time_scale}, settle {args.settle:.0f} s, "
            f"measure {args.seconds:.0f} s; {SEED_PRODUCTS} products, {args.seed_orders} seeded orders",
            flush=True,
        )

        runs: list[dict[str, Any]] = []
        stepped: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for round_number in range(1, args.rounds + 1):
            for mode in MODES:
                print(f"round {round_number}/{args.rounds} {mode}: starting a fresh shop", flush=True)
                with shop_and_locust(mode, args, workdir, endpoints, pins) as (shop, locust, api):
                    measures = measure_window(api, locust, shop, receiver, args)
                    shop_errors = shop.log.new_errors()
                    print(f"    {progress(measures)}", flush=True)
                    for error in shop_errors:
                        print(f"    shop: {error}", flush=True)
                    if args.capacity:
                        print(f"    capacity, steps {','.join(map(str, args.steps))}", flush=True)
                        stepped[mode].append(capacity(api, locust, shop, args.steps))
                runs.append({"mode": mode, "round": round_number, "measures": measures, "shop_errors": shop_errors})
        found = {mode: over_rounds(rounds) for mode, rounds in stepped.items() if rounds}

    summary = summarise(runs)
    print_tables(summary, baseline, args.rounds)
    if found:
        print_capacity(found, baseline)
    result: dict[str, Any] = {
        "modes": MODES,
        "prometheus_metrics": "recorded in every mode",
        "receiver": "tests' OtlpReceiver (test double)" if receiver is not None else "real backends",
        "pinned": {"shop": pins.shop_cpu, "bench_and_locust": pins.rest_cpu} if pins else None,
        "summary": summary,
        # What `shoplab capacity` scales metrics by: one instance of each service, after the lab's default mode ran.
        "series_per_instance": {
            service: round(summary[f"series.{service}"][LAB_DEFAULT]["median"]) for service in SERVICES
        },
        "runs": runs,
    }
    if found:
        result["capacity"] = found
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"raw results in {args.json}")
    if args.record:
        record(KEY, result, {name: getattr(args, name) for name in SETTINGS_RECORDED})
    return 0


if __name__ == "__main__":
    sys.exit(main())
