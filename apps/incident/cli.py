"""`shoplab`: the lab's operator command.

    shoplab diagnose [--window 5m] [--json]     which service is at fault, where, and the evidence
    shoplab gate [--p95 1s] [--error-ratio 0.01] a CI/CD gate: exit 1 when any service breaches
    shoplab releases [--json]                    what runs where: stable, canary, previous release
    shoplab deploy SERVICE VERSION [--canary N]  roll out a release (to N% of requests as a canary)
    shoplab rollback SERVICE [--reason TEXT]     drop the canary, else return to the previous release
    shoplab scenario list | run NAME [--json]    a game day with a verdict
    shoplab capacity [--users 100,10k,1M,100M]   telemetry volume, storage and backend sizes per number of users

Backends default to PROMETHEUS_URL, TEMPO_URL, LOKI_URL, ALERTMANAGER_URL, RESPONDER_URL, then the lab's
published ports; the services to CATALOG_URL, ... , then 127.0.0.1:8081-8084. Admin calls use
SHOPLAB_ADMIN_TOKEN, else a token signed with JWT_SECRET (or JWT_SECRET_FILE) when it is set, else with the native
shop's data/jwt-secret when there is one here, else a login as the admin with DEMO_ADMIN_PASSWORD (or its _FILE).
Exit status: 0 healthy (or done, or pass), 1 incident, breach or failed scenario, 2 a backend or the lab could
not be reached (the output says which and why), the measurements could not be used (capacity), or the command
line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from shoplib.config import ConfigError, cli_argument, http_url, integer, number, raw_value
from shoplib.config import load as load_settings
from shoplib.services import RESPONDER, SERVICES, native_url
from shoplib.supervisor import JWT_SECRET_NAME, NATIVE_DATA_DIR

from . import capacity, scenarios
from .backends import BackendError, Backends, http_transport
from .diagnosis import Diagnosis, diagnose_from, parse_window
from .links import DEFAULT_GRAFANA_URL
from .releases import ReleaseClient, ReleaseError, TokenSource, signed_admin_token
from .report import render

DEFAULT_URLS = {
    "prometheus": ("PROMETHEUS_URL", "http://localhost:9090"),
    "tempo": ("TEMPO_URL", "http://localhost:3200"),
    "loki": ("LOKI_URL", "http://localhost:3100"),
    "grafana": ("GRAFANA_URL", DEFAULT_GRAFANA_URL),
}
LAB_URLS = {
    "alertmanager": ("ALERTMANAGER_URL", "http://localhost:9093"),
    "responder": ("RESPONDER_URL", native_url(RESPONDER)),
    **{service: (f"{service.upper()}_URL", native_url(service)) for service in SERVICES},
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


def _urls(args: argparse.Namespace, defaults: Mapping[str, tuple[str, str]] = DEFAULT_URLS) -> dict[str, str]:
    """Each URL from its option, else its variable, else the default; a malformed variable is an error."""
    urls = {}
    for name, (variable, default) in defaults.items():
        chosen = getattr(args, name, None)
        if chosen is None:
            raw = os.environ.get(variable, "").strip()
            try:
                chosen = http_url(raw) if raw else default
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
        urls[name] = chosen
    return urls


def _admin_token(auth_url: str) -> TokenSource:
    """SHOPLAB_ADMIN_TOKEN; else tokens signed with JWT_SECRET (or the file JWT_SECRET_FILE names), or with the
    secret `make services` generated in ./data; else a login as the lab's demo admin with DEMO_ADMIN_PASSWORD (or
    its _FILE)."""
    given = os.environ.get("SHOPLAB_ADMIN_TOKEN", "").strip()
    if given:
        return lambda: given
    environ = dict(os.environ)
    native_secret = Path(NATIVE_DATA_DIR) / JWT_SECRET_NAME
    if not (raw_value("JWT_SECRET") or "").strip() and native_secret.is_file():
        environ["JWT_SECRET_FILE"] = str(native_secret)
    if (raw_value("JWT_SECRET", environ) or "").strip():
        try:
            return signed_admin_token("shoplab-cli", load_settings((), environ))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    password = (raw_value("DEMO_ADMIN_PASSWORD") or "").strip()
    if not password:
        raise ValueError(
            "no admin credentials: set SHOPLAB_ADMIN_TOKEN, JWT_SECRET(_FILE) or DEMO_ADMIN_PASSWORD(_FILE) (compose "
            "lab: export JWT_SECRET=$(docker compose run --rm --no-deps lab-init show jwt_secret))"
        )
    cached: list[str] = []

    def login() -> str:
        if not cached:
            try:
                response = requests.post(
                    f"{auth_url}/login", json={"username": "admin", "password": password}, timeout=TIMEOUT_S
                )
            except requests.RequestException as exc:
                raise ReleaseError("auth", f"no answer from {auth_url} to log in: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise ReleaseError(
                    "auth",
                    f"admin login refused ({response.status_code}); set SHOPLAB_ADMIN_TOKEN or JWT_SECRET (compose "
                    "lab: export JWT_SECRET=$(docker compose run --rm --no-deps lab-init show jwt_secret))",
                )
            cached.append(str(response.json()["access_token"]))
        return cached[0]

    return login


def _release_client(args: argparse.Namespace) -> ReleaseClient:
    urls = _urls(args, LAB_URLS)
    return ReleaseClient({s: urls[s] for s in SERVICES}, _admin_token(urls["auth"]))


def releases_command(args: argparse.Namespace) -> int:
    client = _release_client(args)
    states, failures = {}, []
    for service in SERVICES:
        try:
            states[service] = client.state(service)
        except ReleaseError as exc:
            failures.append(str(exc))
    if args.json:
        print(json.dumps({"releases": states, "unreachable": failures}, indent=2))
    else:
        print(f"{'service':<10} {'stable':<10} {'since':<25} {'canary':<16} previous")
        for service, state in states.items():
            canary = state.get("canary")
            canary_text = f"{canary['version']} {canary['percent']}%" if canary else "-"
            stable = state["stable"]
            print(
                f"{service:<10} {stable['version']:<10} {stable['deployed_at']:<25} {canary_text:<16} "
                f"{state.get('previous') or '-'}"
            )
    for failure in failures:
        print(f"shoplab: {failure}", file=sys.stderr)
    return EXIT_UNREADABLE if failures else EXIT_HEALTHY


def _change(args: argparse.Namespace, change: Callable[[ReleaseClient], dict[str, Any]]) -> int:
    try:
        state = change(_release_client(args))
    except ReleaseError as exc:
        print(f"shoplab: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE if exc.status is None else EXIT_INCIDENT
    canary = state.get("canary")
    suffix = f", canary {canary['version']} on {canary['percent']}%" if canary else ""
    print(f"{state['service']}: stable {state['stable']['version']}{suffix}")
    return EXIT_HEALTHY


def deploy_command(args: argparse.Namespace) -> int:
    return _change(args, lambda client: client.deploy(args.service, args.version, args.canary))


def rollback_command(args: argparse.Namespace) -> int:
    return _change(args, lambda client: client.rollback(args.service, args.reason or "shoplab rollback"))


def scenario_list_command(_args: argparse.Namespace) -> int:
    for scenario in scenarios.catalogue().values():
        print(f"{scenario.name:<26} {scenario.summary}")
    return EXIT_HEALTHY


def scenario_run_command(args: argparse.Namespace) -> int:
    scenario = scenarios.catalogue()[args.name]
    urls = _urls(args, {**LAB_URLS, "prometheus": DEFAULT_URLS["prometheus"]})
    lab = scenarios.Lab(
        urls={s: urls[s] for s in SERVICES},
        prometheus=urls["prometheus"],
        alertmanager=urls["alertmanager"],
        responder=urls["responder"],
        token=_admin_token(urls["auth"]),
    )
    missing = lab.unreachable()
    if missing:
        print(f"shoplab scenario: the lab does not answer: {', '.join(missing)}", file=sys.stderr)
        return EXIT_UNREADABLE
    result = scenarios.Run(scenario, lab, lambda line: print(line, file=sys.stderr, flush=True), args.customers)
    outcome = result.execute()
    print(json.dumps(outcome.to_json(), indent=2) if args.json else scenarios.render(outcome))
    return EXIT_HEALTHY if outcome.verdict == "pass" else EXIT_INCIDENT


def capacity_command(args: argparse.Namespace) -> int:
    try:
        measured = capacity.load_measurements(args.measurements)
    except capacity.MeasurementsError as exc:
        print(f"shoplab capacity: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    assumed = capacity.Assumptions(
        requests_per_user=args.requests_per_user,
        peak_ratio=args.peak_ratio,
        sampling=args.sampling,
        error_slow_share=args.error_slow_share,
        logs_per_request=args.logs_per_request,
        traces_days=args.traces_days,
        logs_days=args.logs_days,
        metrics_days=args.metrics_days,
        replication_factor=args.replication_factor,
        scrape_interval_s=args.scrape_interval,
        trace_compression=args.trace_compression,
        log_compression=args.log_compression,
        bytes_per_sample=args.bytes_per_sample,
    )
    steps = [capacity.plan(users, measured, assumed) for users in args.users]
    if args.json:
        print(json.dumps(capacity.to_json(steps, measured, assumed), indent=2))
    else:
        print(capacity.render(steps, measured, assumed))
    return EXIT_HEALTHY


def _add_capacity_options(parser: argparse.ArgumentParser) -> None:
    """The model's assumptions as options; defaults and why in capacity.Assumptions and the command's output."""
    defaults = capacity.Assumptions()

    def option(
        name: str, parse: Callable[[str], Any], default: Any, metavar: str, text: str, *, unit: str = ""
    ) -> None:
        shown = "as measured" if default is None else f"{default:g}{unit}" if isinstance(default, float) else default
        parser.add_argument(
            f"--{name}", type=cli_argument(parse), default=default, metavar=metavar, help=f"{text} (default {shown})"
        )

    parser.add_argument(
        "--users",
        type=cli_argument(capacity.parse_users),
        default=capacity.DEFAULT_USERS,
        metavar="LIST",
        help="user counts, one row each (default 100,10k,1M,100M)",
    )
    option("requests-per-user", capacity.positive(1e6), defaults.requests_per_user, "N", "requests per user a day")
    option("peak-ratio", number(1, 1000), defaults.peak_ratio, "X", "the busiest hour's rate over the day's average")
    option(
        "sampling", parse_ratio, defaults.sampling, "RATIO", "share of ordinary traces kept; 1 keeps all, as the lab"
    )
    option("error-slow-share", parse_ratio, defaults.error_slow_share, "RATIO", "share of traces always kept")
    option("logs-per-request", number(0, 1000), None, "N", "log records per request (measured at LOG_LEVEL=info)")
    for signal in ("traces", "logs", "metrics"):
        days = getattr(defaults, f"{signal}_days")
        option(f"{signal}-days", number(0, 3650), days, "DAYS", f"{signal} retention, the lab's by default")
    option("replication-factor", integer(1, 9), defaults.replication_factor, "N", "Mimir's ingester replication")
    option(
        "scrape-interval", parse_seconds, defaults.scrape_interval_s, "DURATION", "Prometheus scrape interval", unit="s"
    )
    option("trace-compression", capacity.positive(1000), defaults.trace_compression, "X", "OTLP bytes / bytes stored")
    option("log-compression", capacity.positive(1000), defaults.log_compression, "X", "OTLP bytes / bytes stored")
    option("bytes-per-sample", capacity.positive(100), defaults.bytes_per_sample, "B", "metrics stored per sample")
    parser.add_argument(
        "--measurements",
        type=Path,
        default=capacity.DEFAULT_MEASUREMENTS,
        metavar="PATH",
        help="a bench/baseline.json with the overhead benchmark's section (default: this checkout's)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object: measurements, assumptions, steps")


def _diagnose(args: argparse.Namespace) -> Diagnosis:
    return diagnose_from(_urls(args), args.window, TIMEOUT_S)


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

    releases = commands.add_parser("releases", help="what runs where: stable, canary and previous releases")
    releases.add_argument("--json", action="store_true", help="the services' /admin/release answers")
    releases.set_defaults(run=releases_command)
    deploy = commands.add_parser("deploy", help="roll out a release, or start a canary with --canary")
    deploy.add_argument("service", choices=SERVICES)
    deploy.add_argument("version", help="one of the versions `shoplab releases --json` lists as available")
    deploy.add_argument(
        "--canary", type=cli_argument(integer(0, 100)), default=0, help="percent of requests (0: full rollout)"
    )
    deploy.set_defaults(run=deploy_command)
    rollback = commands.add_parser("rollback", help="drop the canary, else return to the previous release")
    rollback.add_argument("service", choices=SERVICES)
    rollback.add_argument("--reason", default="", help="kept in the release history")
    rollback.set_defaults(run=rollback_command)

    scenario = commands.add_parser("scenario", help="reproducible game days with a verdict")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", required=True, metavar="list|run")
    scenario_commands.add_parser("list", help="the scenarios and what each injects").set_defaults(
        run=scenario_list_command
    )
    run = scenario_commands.add_parser(
        "run",
        help="inject, watch detection, diagnosis, mitigation and recovery; print the verdict",
        description="Exit 0 on pass, 1 on fail, 2 when the lab (services, Prometheus, Alertmanager, responder) "
        "does not answer. Progress goes to stderr, the verdict to stdout.",
    )
    run.add_argument("name", choices=list(scenarios.catalogue()))
    run.add_argument("--json", action="store_true", help="one JSON object: scenario, verdict, reasons, timings, ...")
    run.add_argument(
        "--customers",
        type=cli_argument(integer(0, 64)),
        default=4,
        help="threads of light traffic the scenario sends itself (0 when Locust already runs; default 4)",
    )
    run.add_argument("--prometheus", type=cli_argument(http_url), default=None, help="Prometheus URL")
    run.set_defaults(run=scenario_run_command)

    capacity_parser = commands.add_parser(
        "capacity",
        help="telemetry volume, storage and backend sizes from 100 users to 100 million",
        description="From the lab's measured telemetry per request (bench/baseline.json, overhead) and the stated "
        "assumptions: per number of users, requests/s, spans, log records and series, each backend's ingest and "
        "storage at retention, and the Tempo, Loki and Mimir component counts of Grafana's sizing guidance. Exit 0, "
        "or 2 when the measurements are missing (the message says how to record them) or an option is wrong.",
    )
    _add_capacity_options(capacity_parser)
    capacity_parser.set_defaults(run=capacity_command)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:  # a malformed environment variable, named in the message
        print(f"shoplab: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except ReleaseError as exc:  # logging in to change releases failed
        print(f"shoplab: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
