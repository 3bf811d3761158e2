"""A telemetry backend outage under load: does the shop keep serving, its memory stay bounded, and is every lost
span counted where the dashboards show it?

    python bench/outage.py                                   # 30 s before, Tempo away 60 s, 60 s after (3 min)
    python bench/outage.py --outage 120 --users 30
    python bench/outage.py --traces-endpoint http://127.0.0.1:4318/v1/traces \\
        --logs-endpoint http://127.0.0.1:3100/otlp/v1/logs \\
        --stop-command "kill -STOP 1234" --start-command "kill -CONT 1234"   # a real Tempo, here hung

The shop runs as the lab runs it (traces and logs over OTLP, log level info) with Locust at a fixed load, pinned
as bench/overhead.py pins them. By default traces and logs go to two OTLP receivers of the tests (test doubles,
not Tempo or Loki: they answer at once and keep nothing); for the outage the traces receiver stops listening, so
the shop's exports are refused as by a stopped Tempo container, and it comes back on the same port after
--outage seconds. Logs keep flowing. With --stop-command / --start-command those commands make the outage instead
(for example `docker compose stop tempo` and `docker compose start tempo` against the compose lab's backends).

Every --every seconds a line: requests/s and errors (Locust), the shop's RSS, the traces export queue, and spans
exported, failed and dropped per second, as the services' /metrics count them (telemetry_exported_items_total,
telemetry_dropped_items_total, telemetry_queued_items: what the telemetry dashboard shows). Then a verdict:
served (no request failed), bounded (RSS growth and queue length), counted (the outage shows as failed or dropped
spans, nothing silently missing), recovered (spans exported again after it).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
from load_capacity import otlp_backends
from overhead import (
    LAB_DEFAULT,
    REPO,
    CountingReceiver,
    Pinning,
    Shop,
    pin,
    pinning,
    positive,
    rss_mib,
    scrape,
    set_users,
    shop_and_locust,
)

QUEUE_LIMIT = 2048  # the SDK's default OTEL_BSP_MAX_QUEUE_SIZE, which the lab keeps
RSS_GROWTH_LIMIT = 0.15  # of the shop's RSS before the outage: more than its queues could explain


@dataclass(frozen=True)
class Sample:
    at: float
    phase: str
    requests: float
    failures: float
    rss_mib: float
    queued: float  # traces waiting in every service's export queue
    exported: float  # cumulative spans, every service
    failed: float
    dropped: float


def sample(api: str, shop: Shop, phase: str, started: float) -> Sample:
    stats = requests.get(f"{api}/stats/requests", timeout=10).json()
    total = stats["stats"][-1]
    counters: dict[tuple[str, str, str], float] = {}
    for url in shop.urls.values():
        _served, _series, found = scrape(url)
        for key, value in found.items():
            counters[key] = counters.get(key, 0.0) + value

    def traces(metric: str, *labels: str) -> float:
        return sum(counters.get((metric, "traces", label), 0.0) for label in labels)

    return Sample(
        at=time.monotonic() - started,
        phase=phase,
        requests=float(total["num_requests"]),
        failures=float(total["num_failures"]),
        rss_mib=rss_mib(shop.processes),
        queued=traces("telemetry_queued_items", ""),
        exported=traces("telemetry_exported_items_total", "success"),
        failed=traces("telemetry_exported_items_total", "failure"),
        dropped=traces("telemetry_dropped_items_total", "queue_full", "already_shutdown"),
    )


def bar(value: float, limit: float, width: int = 20) -> str:
    filled = min(width, round(width * value / limit)) if limit else 0
    return "#" * filled + "." * (width - filled)


def print_line(previous: Sample, now: Sample, queue_limit: float) -> None:
    elapsed = now.at - previous.at

    def rate(field: str) -> float:
        return float(getattr(now, field) - getattr(previous, field)) / elapsed

    print(
        f"{now.at:6.0f} {now.phase:<8} {rate('requests'):7.1f} {now.failures - previous.failures:6.0f} "
        f"{now.rss_mib:8.0f} {now.queued:6.0f} {bar(now.queued, queue_limit)} "
        f"{rate('exported'):9.1f} {rate('failed'):8.1f} {rate('dropped'):8.1f}",
        flush=True,
    )


def run_command(command: str, what: str) -> None:
    print(f"        {what}: {command}", flush=True)
    done = subprocess.run(shlex.split(command), check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"bench: {what} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def verdict(samples: list[Sample], queue_limit: float) -> list[tuple[str, bool, str]]:
    before = [s for s in samples if s.phase == "before"]
    during = [s for s in samples if s.phase == "outage"]
    after = [s for s in samples if s.phase == "after"]
    first, last = samples[0], samples[-1]
    rss_before = max(s.rss_mib for s in before)
    rss_peak = max(s.rss_mib for s in samples)
    growth = (rss_peak - rss_before) / rss_before
    lost = (last.failed - first.failed) + (last.dropped - first.dropped)
    exported_after = after[-1].exported - after[0].exported if len(after) > 1 else 0.0
    queue_peak = max(s.queued for s in samples)
    return [
        ("served", last.failures == first.failures, f"{last.failures - first.failures:.0f} failed requests"),
        (
            "bounded",
            queue_peak <= queue_limit and growth <= RSS_GROWTH_LIMIT,
            f"RSS {rss_before:.0f} -> at most {rss_peak:.0f} MiB ({100 * growth:+.0f} %, limit "
            f"{100 * RSS_GROWTH_LIMIT:.0f} %); traces queued at most {queue_peak:.0f} in all (each service's "
            f"queue holds {QUEUE_LIMIT}, {queue_limit:.0f} in all)",
        ),
        (
            "counted",
            lost > 0 or not during,
            f"{last.failed - first.failed:.0f} spans failed to export and {last.dropped - first.dropped:.0f} were "
            "dropped, in telemetry_exported_items_total{outcome=failure} and telemetry_dropped_items_total",
        ),
        ("recovered", exported_after > 0, f"{exported_after:.0f} spans exported after the backend came back"),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=positive(float), default=30, help="seconds before the outage (30)")
    parser.add_argument("--outage", type=positive(float), default=60, help="seconds the backend is away (60)")
    parser.add_argument("--after", type=positive(float), default=60, help="seconds after it is back (60)")
    parser.add_argument("--every", type=positive(float), default=5, help="seconds between lines (5)")
    parser.add_argument("--users", type=positive(int), default=20, help="Locust users (default 20)")
    parser.add_argument("--think-time-scale", type=positive(float), default=0.2, help="SHOP_THINK_TIME_SCALE (0.2)")
    parser.add_argument("--seed-orders", type=positive(int), default=20_000, help="checkout's order history (20000)")
    parser.add_argument("--traces-endpoint", help="OTLP/HTTP traces URL of a real backend")
    parser.add_argument("--logs-endpoint", help="OTLP/HTTP logs URL of a real backend")
    parser.add_argument("--stop-command", help="makes the outage (with a real backend)")
    parser.add_argument("--start-command", help="ends it")
    args = parser.parse_args(argv)
    for name in ("traces_endpoint", "logs_endpoint"):
        url = getattr(args, name)
        if url is not None and not url.startswith(("http://", "https://")):
            parser.error(f"--{name.replace('_', '-')}: expected an http(s) URL, got {url!r}")
    if (args.stop_command is None) != (args.start_command is None):
        parser.error("--stop-command and --start-command go together")
    if args.stop_command and not args.traces_endpoint:
        parser.error("--stop-command needs --traces-endpoint: the backend it stops")
    if args.traces_endpoint and not args.stop_command:
        parser.error("--traces-endpoint needs --stop-command and --start-command: how to stop that backend")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pins: Pinning | None = pinning()
    if pins is not None:
        pin(psutil.Process(), pins.rest_cpu)
    with tempfile.TemporaryDirectory(prefix="shoplab-outage-") as tmp, ExitStack() as stack:
        endpoints: dict[str, str] = {}
        traces_receiver: CountingReceiver | None = None
        if args.stop_command:
            endpoints |= otlp_backends(args.traces_endpoint, args.logs_endpoint)
        else:
            traces_receiver, logs_receiver = CountingReceiver(), CountingReceiver()
            for receiver in (traces_receiver, logs_receiver):
                receiver.start()
                stack.callback(receiver.stop)
            endpoints |= otlp_backends(f"{traces_receiver.endpoint}/v1/traces", f"{logs_receiver.endpoint}/v1/logs")
            print(
                "telemetry: two OTLP receivers of the tests (test doubles, not Tempo or Loki); the traces one "
                "stops listening for the outage, as a stopped Tempo would"
            )
        settings = argparse.Namespace(seed_orders=args.seed_orders, think_time_scale=args.think_time_scale)
        shop, _locust, api = stack.enter_context(shop_and_locust(LAB_DEFAULT, settings, Path(tmp), endpoints, pins))
        set_users(api, args.users)
        print(
            f"load: {args.users} users; {args.before:.0f} s before, {args.outage:.0f} s outage, "
            f"{args.after:.0f} s after",
            flush=True,
        )
        print(
            f"{'s':>6} {'phase':<8} {'req/s':>7} {'errors':>6} {'RSS MiB':>8} {'queued':>6} "
            f"{'traces queue (all services)':<20} {'exported/s':>9} {'failed/s':>8} {'dropped/s':>8}"
        )
        queue_limit = QUEUE_LIMIT * len(shop.urls)
        started = time.monotonic()
        samples = [sample(api, shop, "before", started)]
        for phase, seconds in (("before", args.before), ("outage", args.outage), ("after", args.after)):
            if phase == "outage":
                if args.stop_command:
                    run_command(args.stop_command, "stopping the backend")
                elif traces_receiver is not None:
                    traces_receiver.stop()
                    print("        the traces receiver stopped listening", flush=True)
            if phase == "after":
                if args.start_command:
                    run_command(args.start_command, "starting the backend")
                elif traces_receiver is not None:
                    traces_receiver.start()
                    print("        the traces receiver listens again", flush=True)
            phase_end = time.monotonic() + seconds
            while time.monotonic() < phase_end:
                time.sleep(max(0.0, min(args.every, phase_end - time.monotonic())))
                samples.append(sample(api, shop, phase, started))
                print_line(samples[-2], samples[-1], queue_limit)
        errors = shop.log.new_errors()
    print()
    results = verdict(samples, queue_limit)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'} {name:<9} {detail}")
    for error in errors:
        print(f"shop: {error}")
    return 0 if all(ok for _name, ok, _detail in results) else 1


if __name__ == "__main__":
    sys.exit(main())
