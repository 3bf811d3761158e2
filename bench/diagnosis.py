"""How often `shoplab diagnose` names the right culprit, and how fast: every drill, several times, under load.

    python bench/diagnosis.py                                   # every drill x 3, and 3 healthy windows
    python bench/diagnosis.py --repeat 5 --drills stalled-payment,missing-index
    python bench/diagnosis.py --record                          # ... and keep the result as the baseline

Starts its own native shop (shoplib's Supervisor) under steady traffic (incident.drills.Traffic), Debian's
Prometheus on the project's prometheus.yml, and the test suite's OTLP receiver with its read-API doubles of
Tempo and Loki (tests/backend_doubles.py: doubles, not Tempo or Loki, as the output says). Each run: a clean
baseline window, the drill injected, one window, a diagnosis (timed), the drill undone. A healthy run is a
window with nothing injected: any culprit named there is a false alarm.

Not a test: the numbers belong to the machine. Targets: service 100 %, operation >= 90 %, <= 10 s, 0 false
alarms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the OTLP receiver, the backend doubles and the Prometheus launcher

from backend_doubles import BackendDouble  # noqa: E402
from incident.backends import Backends, http_transport, recording  # noqa: E402
from incident.diagnosis import Diagnoser, Diagnosis  # noqa: E402
from incident.drills import Drill, SupervisedShop, Traffic, catalogue  # noqa: E402
from otlp_receiver import OtlpReceiver  # noqa: E402
from prom import Prometheus  # noqa: E402
from shoplib.supervisor import Supervisor, poll_until  # noqa: E402

BASELINE = Path(__file__).with_name("baseline.json")
TARGETS = {"service_accuracy": 1.0, "operation_accuracy": 0.9, "max_seconds": 10.0, "false_alarms": 0}


@dataclass(frozen=True)
class Run:
    drill: str
    service_ok: bool
    operation_ok: bool | None  # None where the drill names no operation
    seconds: float
    named: str


def judge(drill: Drill | None, diagnosis: Diagnosis) -> Run:
    culprit = diagnosis.culprit
    named = f"{culprit.service} {culprit.operation or ''}".strip() if culprit else "healthy"
    if drill is None:
        return Run("healthy", culprit is None, None, diagnosis.seconds_taken, named)
    service_ok = culprit is not None and culprit.service == drill.service
    operation_ok = None if drill.operation is None else bool(culprit and culprit.operation == drill.operation)
    return Run(drill.name, service_ok, operation_ok, diagnosis.seconds_taken, named)


def telemetry(args: argparse.Namespace, stack: ExitStack) -> tuple[dict[str, str], dict[str, str], str]:
    """Where the shop sends traces and logs, where diagnosis reads them, and how to describe that."""
    if args.tempo:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": args.otlp_traces,
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": args.otlp_logs,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
        }
        return env, {"tempo": args.tempo, "loki": args.loki}, f"real Tempo {args.tempo} and Loki {args.loki}"
    receiver = OtlpReceiver().start()
    stack.callback(receiver.stop)
    tempo, loki = BackendDouble("tempo", receiver).start(), BackendDouble("loki", receiver).start()
    stack.callback(tempo.stop)
    stack.callback(loki.stop)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_LOGS_EXPORTER": "otlp"}
    return env, {"tempo": tempo.url, "loki": loki.url}, "Tempo and Loki read-API test doubles (not Tempo or Loki)"


def measure(args: argparse.Namespace, workdir: Path) -> list[Run]:
    drills = [d for d in catalogue() if not args.drills or d.name in args.drills.split(",")]
    runs: list[Run] = []
    with ExitStack() as stack:
        env, urls, described = telemetry(args, stack)
        env |= {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}
        out = stack.enter_context((workdir / "shop.stdout").open("wb"))
        shop = stack.enter_context(Supervisor(workdir / "data", environ={**os.environ, **env}, stdout=out))
        prometheus = Prometheus(workdir, shop.ports).start()
        stack.callback(prometheus.stop)
        urls["prometheus"] = prometheus.url
        poll_until(lambda: prometheus.targets_up("shop"), 60, 0.5, "Prometheus to scrape the shop")
        traffic = Traffic(shop.urls, customers=args.customers).start()
        stack.callback(traffic.stop)
        target = SupervisedShop(shop)
        print(f"native shop, Debian's Prometheus {prometheus.url}, {described}; {args.customers} customers", flush=True)
        time.sleep(2 * args.window)
        plan: list[Drill | None] = [None] * args.healthy + drills * args.repeat
        for index, drill in enumerate(plan, 1):
            time.sleep(args.settle + args.window)  # a clean baseline
            undo = drill.inject(target) if drill else (lambda: None)
            exchanges: list[dict[str, Any]] = []
            try:
                time.sleep(args.window)
                diagnosis = Diagnoser(Backends(recording(http_transport(urls, 4.0), exchanges))).diagnose(args.window)
            finally:
                undo()
            run = judge(drill, diagnosis)
            verdict = "ok" if run.service_ok and run.operation_ok is not False else "WRONG"
            print(
                f"[{index:>3}/{len(plan)}] {run.drill:<20} -> {run.named:<40} {run.seconds:5.2f} s  {verdict}",
                flush=True,
            )
            runs.append(run)
            if args.save_responses:
                save(args.save_responses / f"{run.drill}-{index}.json", drill, diagnosis, exchanges, described)
        print(f"traffic: {traffic.requests} requests, {traffic.failures} failed (drills make some fail on purpose)")
    return runs


def save(
    path: Path, drill: Drill | None, diagnosis: Diagnosis, exchanges: list[dict[str, Any]], described: str
) -> None:
    """One diagnosis's every request and answer, with what it should have found: a fixture for tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    expected = {"service": drill.service, "operation": drill.operation} if drill else None
    document = {
        "recorded": f"bench/diagnosis.py --save-responses against a native shop, Debian's Prometheus and {described}",
        "drill": drill.name if drill else "healthy",
        "expected": expected,
        "end": diagnosis.end,
        "window_s": int(diagnosis.end - diagnosis.start),
        "exchanges": exchanges,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def summarize(runs: list[Run]) -> dict[str, float]:
    incidents = [r for r in runs if r.drill != "healthy"]
    with_operation = [r for r in incidents if r.operation_ok is not None]
    seconds = [r.seconds for r in runs]
    return {
        "service_accuracy": sum(r.service_ok for r in incidents) / len(incidents) if incidents else 1.0,
        "operation_accuracy": (
            sum(bool(r.operation_ok) for r in with_operation) / len(with_operation) if with_operation else 1.0
        ),
        "median_seconds": statistics.median(seconds) if seconds else 0.0,
        "max_seconds": max(seconds, default=0.0),
        "false_alarms": sum(not r.service_ok for r in runs if r.drill == "healthy"),
        "healthy_runs": sum(r.drill == "healthy" for r in runs),
        "incident_runs": len(incidents),
    }


def print_table(runs: list[Run], summary: dict[str, float]) -> None:
    print(f"\n{'drill':<20} {'runs':>4} {'service':>8} {'operation':>10} {'median s':>9} {'max s':>6}")
    for name in dict.fromkeys(r.drill for r in runs):
        mine = [r for r in runs if r.drill == name]
        operations = [r.operation_ok for r in mine if r.operation_ok is not None]
        operation = f"{sum(operations)}/{len(operations)}" if operations else "-"
        seconds = [r.seconds for r in mine]
        print(
            f"{name:<20} {len(mine):>4} {sum(r.service_ok for r in mine):>6}/{len(mine)} {operation:>10} "
            f"{statistics.median(seconds):>9.2f} {max(seconds):>6.2f}"
        )
    recorded = json.loads(BASELINE.read_text()).get("diagnosis", {}) if BASELINE.exists() else {}
    print(f"\n{'':24} {'now':>8} {'target':>8} {'baseline':>9}")
    rows = [
        ("top-1 service accuracy", "service_accuracy", "{:.0%}"),
        ("top-1 operation accuracy", "operation_accuracy", "{:.0%}"),
        ("diagnosis median (s)", "median_seconds", "{:.2f}"),
        ("diagnosis max (s)", "max_seconds", "{:.2f}"),
        ("false alarms", "false_alarms", "{:.0f}"),
    ]
    for title, key, shape in rows:
        target = shape.format(TARGETS[key]) if key in TARGETS else ""
        before = shape.format(recorded[key]) if key in recorded else "-"
        print(f"{title:<24} {shape.format(summary[key]):>8} {target:>8} {before:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per drill (default 3)")
    parser.add_argument("--healthy", type=int, default=3, help="healthy windows (default 3)")
    parser.add_argument("--drills", default="", help="comma-separated drill names (default: all)")
    parser.add_argument("--window", type=int, default=15, help="seconds diagnosed, and of baseline (default 15)")
    parser.add_argument("--settle", type=int, default=5, help="seconds after an undo before the baseline (5)")
    parser.add_argument("--customers", type=int, default=8, help="traffic threads (default 8)")
    parser.add_argument("--record", action="store_true", help=f"write the result to {BASELINE.name}")
    parser.add_argument("--tempo", default="", help="a real Tempo to read traces from (with --loki and --otlp-*)")
    parser.add_argument("--loki", default="", help="a real Loki to read logs from")
    parser.add_argument(
        "--otlp-traces", default="", help="where the shop sends traces, e.g. http://127.0.0.1:4318/v1/traces"
    )
    parser.add_argument(
        "--otlp-logs", default="", help="where the shop sends logs, e.g. http://127.0.0.1:3100/otlp/v1/logs"
    )
    parser.add_argument("--save-responses", type=Path, default=None, help="keep every diagnosis's exchanges here")
    args = parser.parse_args(argv)
    known = {d.name for d in catalogue()}
    unknown = sorted(set(filter(None, args.drills.split(","))) - known)
    if unknown:
        parser.error(f"--drills: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    real = (args.tempo, args.loki, args.otlp_traces, args.otlp_logs)
    if any(real) and not all(real):
        parser.error("--tempo, --loki, --otlp-traces and --otlp-logs go together")
    with tempfile.TemporaryDirectory(prefix="shop-bench-diagnosis-") as tmp:
        runs = measure(args, Path(tmp))
    summary = summarize(runs)
    print_table(runs, summary)
    if args.record:
        recorded = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
        recorded["diagnosis"] = {
            **summary,
            "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settings": {k: getattr(args, k) for k in ("repeat", "healthy", "window", "customers")},
        }
        BASELINE.write_text(json.dumps(recorded, indent=2) + "\n")
        print(f"recorded in {BASELINE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
