"""How much traffic the native shop sustains on this machine, and what Locust spends to generate it.

    python bench/load_capacity.py                    # step up users; compare with bench/baseline.json
    python bench/load_capacity.py --record           # ... and record the result as the new baseline
    python bench/load_capacity.py --compare-clients  # the same journeys on FastHttpUser and on HttpUser

Starts its own shop (shoplib's Supervisor, as `make services` does, with fresh data and free ports) and one
Locust process with the shop's journeys (locustfiles/locustfile.py), driven through Locust's web API: each step
sets the number of users, lets them settle, resets the statistics, then measures for --step-seconds. Stepping
stops at the first step with p95 >= 500 ms or any error (failures count from the change of users on, settling
included); the answer is the best step before it. Locust's CPU comes from the kernel's accounting for its
process (psutil), over the measured window only, so start-up is not included. Each step also prints the shop's
own ERROR log lines.

Not a test: the numbers belong to the machine. Run it on demand, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests

from shoplib.supervisor import Supervisor, free_ports, poll_until

REPO = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("baseline.json")
SHOPPERS = REPO / "locustfiles" / "locustfile.py"
REQUESTS_SHOPPER = Path(__file__).with_name("requests_shopper.py")
P95_LIMIT_MS = 500
SATURATED_CPU_PCT = 90  # above this the load generator, not the shop, may be what limits the rate
SPAWN_RATE = 10  # new users per second at each step: a crowd arriving, not all in the same instant
DEFAULT_STEPS = "10,20,30,45,60,80,100,115,130,160,200,250,300,400"
SETTINGS_RECORDED = {
    "capacity": ("steps", "step_seconds", "settle_seconds", "think_time_scale"),
    "client_cost": ("compare_users", "step_seconds", "settle_seconds", "think_time_scale"),
}


@dataclass(frozen=True)
class Step:
    users: int
    requests: int
    rps: float
    p95_ms: float
    error_count: int  # failures and exceptions, settling included
    errors: tuple[str, ...]  # the same, grouped as Locust groups them
    shop_errors: tuple[str, ...]  # the shop's own ERROR lines during the step
    locust_cpu_pct: float
    locust_cpu_s_per_1000: float
    locust_rss_mb: float
    shop_cpu_pct: float

    @property
    def sustained(self) -> bool:
        return self.requests > 0 and self.p95_ms < P95_LIMIT_MS and self.error_count == 0


class ShopLog:
    """The shop's stdout (one JSON object per line), read step by step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_errors(self) -> tuple[str, ...]:
        """ERROR lines since the last call, counted by service, message and reason: what broke, seen from inside."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            lines = log.read().decode(errors="replace").splitlines(keepends=True)
        complete = [line for line in lines if line.endswith("\n")]
        self.offset += sum(len(line.encode()) for line in complete)
        counts: dict[str, int] = {}
        for line in complete:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") == "ERROR":
                reason = record.get("reason") or record.get("error_type") or ""
                key = f"{record.get('service')}: {record.get('message')} {reason}".strip()
                counts[key] = counts.get(key, 0) + 1
        return tuple(f"{count} x {key}" for key, count in sorted(counts.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class RunningShop:
    processes: list[psutil.Process]  # every service's gunicorn master and worker
    urls: dict[str, str]
    log: ShopLog


@contextmanager
def running_shop(workdir: Path) -> Iterator[RunningShop]:
    """The four services as `make services` runs them, with fresh data in `workdir` and free ports."""
    stdout_path = workdir / "shop.stdout"
    with stdout_path.open("wb") as out, Supervisor(workdir / "data", stdout=out) as shop:
        masters = [psutil.Process(process.pid) for process in shop.processes.values()]
        processes = [*masters, *(child for master in masters for child in master.children(recursive=True))]
        yield RunningShop(processes, shop.urls, ShopLog(stdout_path))


@contextmanager
def running_locust(
    locustfile: Path, urls: dict[str, str], think_time_scale: float, workdir: Path
) -> Iterator[tuple[psutil.Process, str]]:
    """Locust with its web UI on a free port (its API is how the steps change the load), shape Steady."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "SHOP_CATALOG_URL": urls["catalog"],
        "SHOP_CHECKOUT_URL": urls["checkout"],
        "SHOP_AUTH_URL": urls["auth"],
        "SHOP_THINK_TIME_SCALE": str(think_time_scale),
        "PYTHONPATH": str(REPO / "locustfiles"),  # bench/requests_shopper.py imports the journeys
    }
    log_path = workdir / f"locust-{locustfile.stem}.log"
    with log_path.open("wb") as log:
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--web-host", "127.0.0.1", "--web-port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}"
    try:
        poll_until(lambda: answers(f"{api}/stats/requests") or locust.poll() is not None, 60, 0.25, "Locust's web UI")
        if locust.poll() is not None:
            raise SystemExit(f"bench: Locust did not start:\n{log_path.read_text()}")
        yield psutil.Process(locust.pid), api
    finally:
        locust.terminate()
        locust.wait(timeout=60)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def locust_errors(api: str) -> tuple[dict[str, Any], int, list[str]]:
    """Locust's statistics since the last reset, how many failures and exceptions, and them as readable lines."""
    stats = requests.get(f"{api}/stats/requests", timeout=10).json()
    exceptions = requests.get(f"{api}/exceptions", timeout=10).json()["exceptions"]
    count = stats["stats"][-1]["num_failures"] + sum(e["count"] for e in exceptions)
    errors = [f"{e['occurrences']} x {e['method']} {e['name']}: {e['error']}" for e in stats["errors"]]
    errors += [f"{e['count']} x exception: {e['msg']}" for e in exceptions]
    return stats, count, errors


def measure(api: str, locust: psutil.Process, shop: RunningShop, *, users: int, settle_s: float, step_s: float) -> Step:
    """One step: change to `users`, let them settle, measure. Errors count from the change on; the rate,
    percentiles and CPU only over the measured window (new users first log in, and scrypt is meant to be slow)."""
    requests.post(f"{api}/stats/reset", timeout=10).raise_for_status()
    # Steady reads the user count and spawn rate from the form on every tick, so one POST changes the load.
    form = {"user_count": users, "spawn_rate": SPAWN_RATE}
    requests.post(f"{api}/swarm", data=form, timeout=10).raise_for_status()
    poll_until(
        lambda: requests.get(f"{api}/stats/requests", timeout=5).json()["user_count"] == users, 120, 0.25, "users"
    )
    time.sleep(settle_s)
    _stats, settling_count, settling_errors = locust_errors(api)

    shop_processes = shop.processes
    requests.post(f"{api}/stats/reset", timeout=10).raise_for_status()
    started = time.monotonic()
    locust_cpu, shop_cpu = cpu_seconds([locust]), cpu_seconds(shop_processes)
    time.sleep(step_s)
    locust_cpu, shop_cpu = cpu_seconds([locust]) - locust_cpu, cpu_seconds(shop_processes) - shop_cpu
    elapsed = time.monotonic() - started
    stats, window_count, window_errors = locust_errors(api)
    total = stats["stats"][-1]  # the "Aggregated" row
    count = total["num_requests"]
    return Step(
        users=users,
        requests=count,
        rps=round(count / elapsed, 1),
        p95_ms=total["response_time_percentile_0.95"] or 0.0,
        error_count=settling_count + window_count,
        errors=tuple(settling_errors + window_errors),
        shop_errors=shop.log.new_errors(),
        locust_cpu_pct=round(100 * locust_cpu / elapsed, 1),
        locust_cpu_s_per_1000=round(1000 * locust_cpu / count, 3) if count else 0.0,
        locust_rss_mb=round(locust.memory_info().rss / 2**20, 1),
        shop_cpu_pct=round(100 * shop_cpu / elapsed, 1),
    )


def print_step(step: Step) -> None:
    verdict = "ok" if step.sustained else "over the limit"
    if step.locust_cpu_pct > SATURATED_CPU_PCT:
        verdict += ", Locust saturated"
    print(
        f"{step.users:>6} {step.rps:>8} {step.p95_ms:>8.0f} {step.error_count:>6} {step.locust_cpu_pct:>9} "
        f"{step.locust_cpu_s_per_1000:>13} {step.locust_rss_mb:>8} {step.shop_cpu_pct:>8}  {verdict}",
        flush=True,
    )
    for error in step.errors:
        print(f"         locust: {error}", flush=True)
    for error in step.shop_errors:
        print(f"         shop:   {error}", flush=True)


def capacity(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    steps = [int(users) for users in args.steps.split(",")]
    print(" users    req/s  p95(ms) errors  locust%  cpu s/1000req  rss(MB)   shop%", flush=True)
    measured: list[Step] = []
    with (
        running_shop(workdir) as shop,
        running_locust(SHOPPERS, shop.urls, args.think_time_scale, workdir) as (locust, api),
    ):
        for users in steps:
            step = measure(api, locust, shop, users=users, settle_s=args.settle_seconds, step_s=args.step_seconds)
            print_step(step)
            measured.append(step)
            if not step.sustained:
                break
    sustained = [step for step in measured if step.sustained]
    if not sustained:
        raise SystemExit("bench: not even the first step stayed under p95 500 ms without errors")
    best = max(sustained, key=lambda step: step.rps)
    if measured[-1].sustained:
        print(f"the steps ended before the limit: the shop sustains at least {best.rps} req/s (add --steps)")
    return {
        "max_sustained_rps": best.rps,
        "at_users": best.users,
        "p95_ms": best.p95_ms,
        "locust_cpu_s_per_1000_requests": best.locust_cpu_s_per_1000,
        "locust_cpu_pct": best.locust_cpu_pct,
        "shop_cpu_pct": best.shop_cpu_pct,
        "locust_rss_mb": best.locust_rss_mb,
        "steps": [asdict(step) for step in measured],
    }


def compare_clients(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same journeys, users and think times on each client; CPU per 1,000 requests is what differs."""
    results = {}
    with running_shop(workdir) as shop:
        for client, locustfile in (("FastHttpUser", SHOPPERS), ("HttpUser", REQUESTS_SHOPPER)):
            with running_locust(locustfile, shop.urls, args.think_time_scale, workdir) as (locust, api):
                step = measure(
                    api, locust, shop, users=args.compare_users, settle_s=args.settle_seconds, step_s=args.step_seconds
                )
            print(
                f"{client:>13}: {step.rps} req/s, Locust {step.locust_cpu_pct} % CPU, "
                f"{step.locust_cpu_s_per_1000} CPU s per 1,000 requests, p95 {step.p95_ms:.0f} ms, "
                f"{step.error_count} errors",
                flush=True,
            )
            results[client] = step.locust_cpu_s_per_1000
    ratio = results["HttpUser"] / results["FastHttpUser"] if results["FastHttpUser"] else float("nan")
    print(f"HttpUser costs {ratio:.1f}x the CPU of FastHttpUser per request")
    return {"users": args.compare_users, "locust_cpu_s_per_1000_requests": results}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "locust": importlib.metadata.version("locust"),
    }


def report_against_baseline(result: dict[str, Any], key: str) -> None:
    if not BASELINE.exists():
        print(f"no baseline yet ({BASELINE.relative_to(REPO)}); record one with --record")
        return
    baseline = json.loads(BASELINE.read_text()).get(key)
    if not baseline:
        print(f"the baseline has no {key!r} section; record one with --record")
        return
    print(f"\n{'':34} {'now':>10} {'baseline':>10} {'change':>8}")
    for name in ("max_sustained_rps", "p95_ms", "locust_cpu_s_per_1000_requests", "shop_cpu_pct"):
        if name in result and name in baseline:
            now, then = result[name], baseline[name]
            change = f"{100 * (now - then) / then:+.0f} %" if then else "n/a"
            print(f"{name:34} {now:>10} {then:>10} {change:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=DEFAULT_STEPS, help=f"users per step (default {DEFAULT_STEPS})")
    parser.add_argument("--step-seconds", type=float, default=30, help="measured window per step (default 30)")
    parser.add_argument("--settle-seconds", type=float, default=8, help="unmeasured time after each change (8)")
    parser.add_argument(
        "--think-time-scale", type=float, default=0.1, help="SHOP_THINK_TIME_SCALE for the users (default 0.1)"
    )
    parser.add_argument("--compare-clients", action="store_true", help="FastHttpUser vs HttpUser instead")
    parser.add_argument("--compare-users", type=int, default=30, help="users for --compare-clients (default 30)")
    parser.add_argument("--record", action="store_true", help=f"write the result to {BASELINE.name}")
    args = parser.parse_args(argv)

    key = "client_cost" if args.compare_clients else "capacity"
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as tmp:
        result = compare_clients(args, Path(tmp)) if args.compare_clients else capacity(args, Path(tmp))
    if key == "capacity":
        print(
            f"\nhighest sustained rate: {result['max_sustained_rps']} req/s at {result['at_users']} users "
            f"(p95 {result['p95_ms']:.0f} ms, no errors); Locust CPU: {result['locust_cpu_s_per_1000_requests']} s "
            f"per 1,000 requests"
        )
        report_against_baseline(result, key)
    if args.record:
        record(key, result, {name: getattr(args, name) for name in SETTINGS_RECORDED[key]})
    return 0


def record(key: str, result: dict[str, Any], settings: dict[str, Any]) -> None:
    """`result` as the section `key` of bench/baseline.json, with when, on what machine and with which settings."""
    recorded = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    recorded[key] = {
        **result,
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "settings": settings,
    }
    BASELINE.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"recorded under {key!r} in {BASELINE.relative_to(REPO)}")


def otlp_backends(traces_endpoint: str | None, logs_endpoint: str | None) -> dict[str, str]:
    """The OTEL_* variables that send the shop's traces and logs to the backends given (printed as they are set)."""
    env = {}
    for variable, value in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", logs_endpoint),
    ):
        if value:
            env[variable] = value
            print(f"telemetry: {variable}={value}")
    return env


if __name__ == "__main__":
    sys.exit(main())
