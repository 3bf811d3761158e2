"""Every scenario of `shoplab scenario`, one after another against one native lab, with their timings side by
side and against the targets.

    python bench/scenarios.py                        # all scenarios after a 4-minute warm-up
    python bench/scenarios.py --scenarios payment-canary --warmup 60

The lab: the native shop (checkout with its full 250 000-order history, so a missing index shows), the
responder in auto mode with canary analysis, Debian's Prometheus and Alertmanager on the project's configs,
and Tempo/Loki read-API doubles over an OTLP receiver of the tests' (doubles, not Tempo or Loki; the diagnosis
reads them as it would the real ones). Light traffic runs throughout; the warm-up gives the baseline rules a
past. Not a test: the numbers belong to the machine.
Targets (issue #10): fault or deploy -> alert firing <= 30 s median; alert -> rollback done <= 15 s;
deploy -> recovered <= 90 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the native lab the end-to-end tests run

from incident.drills import Traffic  # noqa: E402
from incident.releases import signed_admin_token  # noqa: E402
from incident.scenarios import Lab, Result, Run, catalogue  # noqa: E402
from native_lab import NativeLab, native_lab  # noqa: E402
from shoplib.config import load as load_settings  # noqa: E402

TARGETS = {"detect_s": 30.0, "alert_to_rollback_s": 15.0, "deploy_to_recovered_s": 90.0}
BASELINE = REPO / "bench" / "baseline.json"


def scenario_lab(lab: NativeLab) -> Lab:
    env = lab.env
    settings = load_settings((), lab.shop.supervisor.environ)  # the native shop's JWT settings: its data's secret
    return Lab(
        urls=lab.shop.urls,
        prometheus=env["PROMETHEUS_URL"],
        alertmanager=env["ALERTMANAGER_URL"],
        responder=env["RESPONDER_URL"],
        token=signed_admin_token("bench", settings),
    )


def run_all(names: list[str], warmup_s: int, workdir: Path) -> list[Result]:
    results = []
    with native_lab(workdir, {"RESPONDER_MODE": "auto"}, seed_orders=250_000) as running:
        lab = scenario_lab(running)
        background = Traffic(lab.urls, customers=4).start()
        print(f"native lab up; warming up {warmup_s} s of light traffic so the baseline rules have a past", flush=True)
        time.sleep(warmup_s)
        background.stop()
        for index, name in enumerate(names, 1):
            print(f"\n[{index}/{len(names)}] {name}", flush=True)
            result = Run(catalogue()[name], lab, lambda line: print(f"  {line}", flush=True)).execute()
            results.append(result)
            print(f"  => {result.verdict.upper()} {'; '.join(result.reasons)}", flush=True)
            time.sleep(30)  # let the previous incident's alerts resolve
    return results


def report(results: list[Result]) -> dict[str, float | None]:
    print(f"\n{'scenario':<26} {'verdict':<7} {'detect':>7} {'diagnose':>9} {'mitigate':>9} {'recover':>8}  diagnosis")
    for r in results:
        t = r.timings
        cells = [
            f"{t[k]:.1f}" if t[k] is not None else "-" for k in ("detect_s", "diagnose_s", "mitigate_s", "recover_s")
        ]
        culprit = (r.diagnosis or {}).get("culprit") or {}
        named = f"{culprit.get('service')} {culprit.get('operation') or ''}".strip()
        print(f"{r.scenario:<26} {r.verdict:<7} {cells[0]:>7} {cells[1]:>9} {cells[2]:>9} {cells[3]:>8}  {named}")
        for reason in r.reasons:
            print(f"  - {reason}")
    detects = [r.timings["detect_s"] for r in results if r.timings["detect_s"] is not None]
    rollbacks = [
        r.timings["mitigate_s"] - r.timings["detect_s"]
        for r in results
        if any(a.get("by") == "responder" and a.get("action") == "rollback" for a in r.actions)
        and r.timings["mitigate_s"] is not None
        and r.timings["detect_s"] is not None
    ]
    recovers = [r.timings["recover_s"] for r in results if r.timings["recover_s"] is not None]
    summary = {
        "passed": sum(r.verdict == "pass" for r in results) / len(results),
        "detect_s": statistics.median(detects) if detects else None,
        "alert_to_rollback_s": statistics.median(rollbacks) if rollbacks else None,
        "deploy_to_recovered_s": statistics.median(recovers) if recovers else None,
    }
    print(f"\n{'':32} {'now':>8} {'target':>8}")
    print(f"{'scenarios passed':<32} {summary['passed']:>8.0%} {'100%':>8}")
    for key, label in (
        ("detect_s", "median s, injection -> alert"),
        ("alert_to_rollback_s", "median s, alert -> rollback"),
        ("deploy_to_recovered_s", "median s, injection -> recovered"),
    ):
        value = summary[key]
        print(f"{label:<32} {'-' if value is None else f'{value:.1f}':>8} {TARGETS[key]:>8.0f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    parser.add_argument("--warmup", type=int, default=240, help="seconds of traffic before the first (240)")
    parser.add_argument("--record", action="store_true", help="store the numbers in bench/baseline.json")
    args = parser.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n] or list(catalogue())
    unknown = sorted(set(names) - set(catalogue()))
    if unknown:
        parser.error(f"--scenarios: unknown {', '.join(unknown)}; choose from {', '.join(catalogue())}")
    with tempfile.TemporaryDirectory(prefix="shop-bench-scenarios-") as workdir:
        results = run_all(names, args.warmup, Path(workdir))
    summary = report(results)
    if args.record:
        baseline = json.loads(BASELINE.read_text())
        baseline["scenarios"] = {"summary": summary, "runs": [r.to_json() for r in results]}
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
