"""`shoplab`: the lab's operator command.

    shoplab diagnose [--window 5m] [--json]     which service is at fault, where, and the evidence
    shoplab gate [--p95 1s] [--error-ratio 0.01] a CI/CD gate: exit 1 when any service breaches

Backends default to PROMETHEUS_URL, TEMPO_URL, LOKI_URL, then the compose lab's published ports.
Exit status: 0 healthy, 1 incident (or a breach, for gate), 2 a backend could not be read (the output says
which and why, and what the other signals showed) or the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence

from shoplib.config import cli_argument, http_url

from .backends import BackendError, Backends, http_transport
from .diagnosis import Diagnoser, Diagnosis, parse_window
from .links import DEFAULT_GRAFANA_URL
from .report import render

DEFAULT_URLS = {
    "prometheus": ("PROMETHEUS_URL", "http://localhost:9090"),
    "tempo": ("TEMPO_URL", "http://localhost:3200"),
    "loki": ("LOKI_URL", "http://localhost:3100"),
    "grafana": ("GRAFANA_URL", DEFAULT_GRAFANA_URL),
}
TIMEOUT_S = 4.0  # per backend call; a diagnosis makes a few dozen of them, mostly in parallel
EXIT_HEALTHY, EXIT_INCIDENT, EXIT_UNREADABLE = 0, 1, 2  # argparse also exits 2 on a bad command line
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")


def parse_seconds(raw: str) -> float:
    """'250ms', '1s' or '1.5s' as seconds (above 0, at most an hour)."""
    match = _SECONDS.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"expected a latency such as 250ms or 1s, got {raw!r}")
    seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if not 0 < seconds <= 3600:
        raise ValueError(f"must be above 0 and at most 1h, got {raw!r}")
    return seconds


def parse_ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a ratio such as 0.01, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {raw!r}")
    return value


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=cli_argument(parse_window), default=300, help="period to explain (default 5m)")
    for name, (variable, default) in DEFAULT_URLS.items():
        parser.add_argument(
            f"--{name}",
            type=cli_argument(http_url),
            default=None,
            help=f"{name.capitalize()} URL (default: ${variable}, else {default})",
        )


def _urls(args: argparse.Namespace) -> dict[str, str]:
    """Each URL from its option, else its variable, else the default; a malformed variable is an error."""
    urls = {}
    for name, (variable, default) in DEFAULT_URLS.items():
        chosen = getattr(args, name)
        if chosen is None:
            raw = os.environ.get(variable, "").strip()
            try:
                chosen = http_url(raw) if raw else default
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
        urls[name] = chosen
    return urls


def _diagnose(args: argparse.Namespace) -> Diagnosis:
    urls = _urls(args)
    backends = Backends(http_transport({k: v for k, v in urls.items() if k != "grafana"}, TIMEOUT_S))
    return Diagnoser(backends, urls["grafana"]).diagnose(args.window)


def _print(diagnosis: Diagnosis, as_json: bool) -> None:
    if as_json:
        print(json.dumps(diagnosis.to_json(), indent=2))
    else:
        print(render(diagnosis))
    if diagnosis.partial:
        for backend, reason in diagnosis.unavailable.items():
            print(f"shoplab: {backend} could not be read: {reason}", file=sys.stderr)


def _exit_code(diagnosis: Diagnosis) -> int:
    if diagnosis.partial:
        return EXIT_UNREADABLE
    return EXIT_INCIDENT if diagnosis.culprit else EXIT_HEALTHY


def diagnose_command(args: argparse.Namespace) -> int:
    diagnosis = _diagnose(args)
    _print(diagnosis, args.json)
    return _exit_code(diagnosis)


def gate_command(args: argparse.Namespace) -> int:
    """Fails (1) when any service's p95 or server-error ratio over the window breaches; prints why and the
    diagnosis. Only Prometheus decides the gate; the diagnosis uses whatever else answers."""
    urls = _urls(args)
    backends = Backends(http_transport({"prometheus": urls["prometheus"]}, TIMEOUT_S))
    window = f"{args.window}s"
    p95 = f"histogram_quantile(0.95, sum by (le, service) (rate(http_request_duration_seconds_bucket[{window}])))"
    errors = (
        f'sum by (service) (rate(http_request_duration_seconds_count{{status_code=~"5.."}}[{window}]))'
        f" / sum by (service) (rate(http_request_duration_seconds_count[{window}]))"
    )
    try:
        now = time.time()
        latencies, ratios = backends.query(p95, now), backends.query(errors, now)
    except BackendError as exc:
        print(f"shoplab gate: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    breaches = [
        f"{s.labels.get('service')}: p95 {s.value:.3f} s > {args.p95:g} s" for s in latencies if s.value > args.p95
    ] + [
        f"{s.labels.get('service')}: {s.value:.2%} server errors > {args.error_ratio:.2%}"
        for s in ratios
        if s.value > args.error_ratio
    ]
    if not breaches:
        print(f"gate passed: every service under p95 {args.p95:g} s and {args.error_ratio:.2%} server errors")
        return EXIT_HEALTHY
    print("gate FAILED:\n" + "\n".join(f"  {breach}" for breach in breaches) + "\n")
    _print(_diagnose(args), as_json=False)
    return EXIT_INCIDENT


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="shoplab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    diagnose = commands.add_parser(
        "diagnose",
        help="name the culprit service and operation, with evidence",
        description="Explain the last --window against the period before it: which ONE service is at fault, in "
        "which operation, with the PromQL, TraceQL and LogQL that show it. Exit 0 healthy, 1 incident, "
        "2 a backend could not be read (the rest is still diagnosed).",
    )
    _add_backend_options(diagnose)
    diagnose.add_argument("--json", action="store_true", help="one JSON object (schema in README, Diagnose)")
    diagnose.set_defaults(run=diagnose_command)
    gate = commands.add_parser(
        "gate",
        help="CI/CD gate: exit 1 when any service breaches p95 or error ratio",
        description="Exit 1, printing the breaches and a diagnosis, when any service's p95 latency or share of "
        "server errors over --window exceeds the limits; 0 otherwise; 2 if Prometheus cannot be read.",
    )
    _add_backend_options(gate)
    gate.add_argument("--p95", type=cli_argument(parse_seconds), default=1.0, help="latency limit (default 1s)")
    gate.add_argument(
        "--error-ratio", type=cli_argument(parse_ratio), default=0.01, help="server-error limit (default 0.01)"
    )
    gate.set_defaults(run=gate_command)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:  # a malformed environment variable, named in the message
        print(f"shoplab: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
