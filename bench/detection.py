"""How fast the alert rules catch each drill, which service they page first, and how quiet they stay at peak.

    python bench/detection.py                          # every drill, then a 20-minute healthy peak hour
    python bench/detection.py --drills stalled-payment,missing-index --peak-minutes 5

Starts its own native shop (shoplib's Supervisor) under steady traffic (incident.drills.Traffic), Debian's
Prometheus on the project's prometheus.yml and rules, Debian's Alertmanager on alertmanager.yml (with its
inhibit rules) and the lab's webhook sink. After a warm-up that gives the baseline rules some history, each
drill is injected and watched for up to --watch seconds: the first shop alert firing in Prometheus (time, and
the service it names) and the first page Alertmanager delivers (after its 10 s group_wait and inhibition).
Then the drill is undone and the bench waits for every alert to resolve. Last, Locust's PeakHourShape runs
with nothing injected: every shop alert that fires then is a false alarm.

Only alerts about the shop's services count (Tempo, Loki and Grafana do not run natively, so
ObservabilityBackendDown fires throughout and is left out). Not a test: the numbers belong to the machine.
Targets: median time to alert <= 30 s, the right service first in >= 90 %, no alert in the healthy peak hour.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the Prometheus and Alertmanager launchers

from incident.drills import Drill, SupervisedShop, Traffic, catalogue  # noqa: E402
from prom import Alertmanager, Prometheus  # noqa: E402
from shoplib.db import parse_timestamp  # noqa: E402
from shoplib.services import SERVICES  # noqa: E402
from shoplib.supervisor import Supervisor, free_ports, poll_until  # noqa: E402

TARGETS = {"median_seconds": 30.0, "right_first": 0.9, "peak_alerts": 0}


@dataclass(frozen=True)
class Detection:
    drill: str
    expected: str
    first_alert: str  # "alertname service" or "-"
    first_service: str
    seconds: float | None  # to the first shop alert firing in Prometheus
    page_service: str
    page_seconds: float | None  # to the first page the sink received
    checkout_names: str  # the `dependency` labels on checkout's alerts ("none": no label), or "-" if none fired


def shop_alerts(prometheus: str) -> list[dict[str, str]]:
    """Firing pages about a shop service (their labels, with activeAt). Tickets (the slow-burn SLO alerts, which
    by design keep firing for hours after an incident) are not what wakes someone up, and are left out."""
    alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [
        {**a["labels"], "activeAt": a["activeAt"]}
        for a in alerts
        if a["state"] == "firing" and a["labels"].get("service") in SERVICES and a["labels"].get("severity") == "page"
    ]


@dataclass(frozen=True)
class Page:
    alertname: str
    service: str
    at: float  # epoch seconds the sink received it


def pages(sink_log: Path, since: float) -> list[Page]:
    """Firing notifications about shop services the sink logged after `since`, oldest first."""
    found = []
    for line in sink_log.read_text().split("\n")[:-1]:  # the last may be half-written
        entry = json.loads(line)
        service = entry.get("labels", {}).get("service")
        if entry.get("message") == "alert" and entry.get("status") == "firing" and service in SERVICES:
            moment = datetime.fromisoformat(entry["timestamp"]).timestamp()
            # Alertmanager resends a group's older alerts with each new one: only those that began since count.
            if moment >= since and parse_timestamp(entry["starts_at"]).timestamp() >= since:
                found.append(Page(entry["alertname"], service, moment))
    return found


def watch(drill: Drill, target: Supervisor, prometheus: str, sink_log: Path, watch_s: float) -> Detection:
    started = time.time()
    undo = drill.inject(SupervisedShop(target))
    first: dict[str, str] | None = None
    seconds = page_seconds = None
    page_service = "-"
    checkout_names: set[str] = set()
    try:
        # After the first page, 20 s more: checkout's alerts (held back, or not) fire after the culprit's.
        while time.time() - started < watch_s and (
            first is None or page_seconds is None or time.time() - started < page_seconds + 20
        ):
            # Alerts still firing from an earlier drill (a 1 h SLO window remembers) are not this drill's.
            firing = [a for a in shop_alerts(prometheus) if parse_timestamp(a["activeAt"]).timestamp() >= started]
            # The SLO pages name no dependency by design: only the symptom alerts can.
            checkout_names |= {
                a.get("dependency", "none")
                for a in firing
                if a["service"] == "checkout" and "Budget" not in a["alertname"]
            }
            if first is None and firing:
                # The earliest to become active: RFC 3339 times of one Prometheus sort as text.
                first, seconds = min(firing, key=lambda alert: alert["activeAt"]), time.time() - started
            if page_seconds is None and (delivered := pages(sink_log, started)):
                page_service, page_seconds = delivered[0].service, delivered[0].at - started
            time.sleep(1)
    finally:
        undo()
    return Detection(
        drill.name,
        drill.service,
        f"{first['alertname']} {first['service']}" if first else "-",
        first["service"] if first else "-",
        seconds,
        page_service,
        page_seconds,
        ",".join(sorted(checkout_names)) or "-",
    )


def quiet(prometheus: str, timeout_s: float) -> bool:
    """Wait until no shop alert fires (a drill's aftermath has resolved)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not shop_alerts(prometheus):
            return True
        time.sleep(2)
    return False


def peak_hour(shop: Supervisor, prometheus: str, minutes: float, workdir: Path) -> list[str]:
    """Locust's PeakHourShape for `minutes`, nothing injected; every shop alert that fires meanwhile."""
    env = {
        **os.environ,
        "SHOP_CATALOG_URL": shop.urls["catalog"],
        "SHOP_CHECKOUT_URL": shop.urls["checkout"],
        "SHOP_AUTH_URL": shop.urls["auth"],
        "SHOP_PEAK_DURATION": f"{int(minutes * 60)}s",
    }
    command = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles" / "locustfile.py"), "--headless"]
    command += ["--only-summary", "--shape", "PeakHourShape"]
    seen: dict[str, str] = {}
    with (workdir / "locust.log").open("wb") as log:
        locust = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        started = time.time()
        while locust.poll() is None and time.time() - started < minutes * 60 + 120:
            for alert in shop_alerts(prometheus):
                seen.setdefault(
                    f"{alert['alertname']} {alert['service']} {alert.get('route', '')}".strip(), alert["activeAt"]
                )
            elapsed = int(time.time() - started)
            if elapsed % 60 < 5:
                print(f"  peak hour: {elapsed // 60} of {minutes:g} min, {len(seen)} shop alerts so far", flush=True)
            time.sleep(5)
        if locust.poll() is None:
            locust.terminate()
        locust.wait(timeout=60)
    return [f"{name} (active since {since})" for name, since in seen.items()]


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[Detection], list[str] | None]:
    drills = [d for d in catalogue() if not args.drills or d.name in args.drills.split(",")]
    results: list[Detection] = []
    with ExitStack() as stack:
        out = stack.enter_context((workdir / "shop.stdout").open("wb"))
        shop = stack.enter_context(Supervisor(workdir / "data", stdout=out))
        (sink_port,) = free_ports(1)
        sink_log = workdir / "sink.log"
        sink = subprocess.Popen(
            [sys.executable, str(REPO / "alertmanager" / "webhook_sink.py")],
            env={**os.environ, "PORT": str(sink_port)},
            stdout=stack.enter_context(sink_log.open("wb")),
        )
        stack.callback(sink.terminate)
        alertmanager = Alertmanager(workdir, f"http://127.0.0.1:{sink_port}/alerts").start()
        stack.callback(alertmanager.stop)
        prometheus = Prometheus(workdir, shop.ports, alertmanager.address).start()
        stack.callback(prometheus.stop)
        poll_until(lambda: prometheus.targets_up("shop"), 60, 0.5, "Prometheus to scrape the shop")
        traffic = Traffic(shop.urls, customers=args.customers).start()
        stack.callback(traffic.stop)
        print(
            f"native shop, Debian's Prometheus and Alertmanager; {args.customers} customers; warming up "
            f"{args.warmup} s so the baseline rules have a past",
            flush=True,
        )
        time.sleep(args.warmup)
        for index, drill in enumerate(drills, 1):
            if not quiet(prometheus.url, 180):
                print(f"  still firing before {drill.name}: {shop_alerts(prometheus.url)}", flush=True)
            time.sleep(args.settle)
            result = watch(drill, shop, prometheus.url, sink_log, args.watch)
            results.append(result)
            took = f"{result.seconds:.0f} s" if result.seconds is not None else "not within the watch"
            paged = f"{result.page_service} after {result.page_seconds:.0f} s" if result.page_seconds else "no page"
            print(
                f"[{index:>2}/{len(drills)}] {drill.name:<22} first alert: {result.first_alert:<40} {took:>8}; "
                f"paged: {paged}; checkout names: {result.checkout_names}",
                flush=True,
            )
        traffic.stop()
        false_alarms = None
        if args.peak_minutes > 0:
            quiet(prometheus.url, 180)
            print(f"healthy peak hour: Locust PeakHourShape for {args.peak_minutes:g} minutes", flush=True)
            false_alarms = peak_hour(shop, prometheus.url, args.peak_minutes, workdir)
    return results, false_alarms


def report(results: list[Detection], false_alarms: list[str] | None) -> None:
    print(f"\n{'drill':<22} {'expected':<9} {'first alert':<42} {'s':>4}  {'paged':<9} {'s':>4}  checkout names")
    for r in results:
        seconds = f"{r.seconds:.0f}" if r.seconds is not None else "-"
        page_s = f"{r.page_seconds:.0f}" if r.page_seconds is not None else "-"
        print(
            f"{r.drill:<22} {r.expected:<9} {r.first_alert:<42} {seconds:>4}  {r.page_service:<9} {page_s:>4}  "
            f"{r.checkout_names}"
        )
    caught = [r.seconds for r in results if r.seconds is not None]
    right = sum(r.first_service == r.expected for r in results)
    right_page = sum(r.page_service == r.expected for r in results)
    print(f"\n{'':32} {'now':>8} {'target':>8}")
    median = statistics.median(caught) if caught else float("nan")
    print(f"{'caught':<32} {len(caught):>5}/{len(results):<2}")
    print(f"{'median s to the first alert':<32} {median:>8.0f} {TARGETS['median_seconds']:>8.0f}")
    print(f"{'right service alerted first':<32} {right / len(results):>8.0%} {TARGETS['right_first']:>8.0%}")
    print(f"{'right service paged first':<32} {right_page / len(results):>8.0%} {TARGETS['right_first']:>8.0%}")
    # checkout's alerts name the culprit dependency, or none when checkout itself is at fault.
    with_checkout = [r for r in results if r.checkout_names != "-"]
    named = sum(r.checkout_names == (r.expected if r.expected != "checkout" else "none") for r in with_checkout)
    print(f"{'checkout alerts naming it right':<32} {named:>5}/{len(with_checkout):<2}")
    if false_alarms is not None:
        print(f"{'alerts in the healthy peak hour':<32} {len(false_alarms):>8} {TARGETS['peak_alerts']:>8}")
        for alarm in false_alarms:
            print(f"  {alarm}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", default="", help="comma-separated drill names (default: all)")
    parser.add_argument("--warmup", type=int, default=240, help="seconds of traffic before the first drill (240)")
    parser.add_argument("--watch", type=int, default=75, help="seconds to wait for an alert per drill (75)")
    parser.add_argument("--settle", type=int, default=20, help="quiet seconds before each drill (20)")
    parser.add_argument("--customers", type=int, default=8, help="traffic threads during the drills (8)")
    parser.add_argument("--peak-minutes", type=float, default=20, help="healthy peak hour length; 0 skips it (20)")
    args = parser.parse_args(argv)
    known = {d.name for d in catalogue()}
    unknown = sorted(set(filter(None, args.drills.split(","))) - known)
    if unknown:
        parser.error(f"--drills: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    with tempfile.TemporaryDirectory(prefix="shop-bench-detection-") as tmp:
        results, false_alarms = measure(args, Path(tmp))
    report(results, false_alarms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
