"""Memory of every lab process at idle, at the peak hour and at the Spike, against compose.yaml's limits, and how
long each takes to stop on SIGTERM (Docker's `stop` waits 10 s before it kills).

    python bench/footprint.py                                   # about 12 minutes
    python bench/footprint.py --idle-seconds 60 --peak-duration 3m --spike-duration 2m
    python bench/footprint.py --traces-endpoint http://127.0.0.1:4318/v1/traces \\
        --logs-endpoint http://127.0.0.1:3100/otlp/v1/logs --watch tempo=PID --watch loki=PID

Starts natively what compose starts from this repo, as compose starts it: the four services and the responder
(shoplib's Supervisor, with the lab's production data: 600 products, 250 000 seeded orders), Debian's Prometheus
and Alertmanager on the project's configs, the alert sink, and a Locust master with one worker (the lab's
command line: --class-picker, Steady with 10 users). Telemetry goes to the tests' OTLP receiver (a double, not
Tempo or Loki) unless --traces-endpoint/--logs-endpoint point at real ones; --watch NAME=PID adds the memory of
processes started elsewhere (a Tempo or Loki you run), which are left running.

Phases: idle (Steady, 10 users, as the lab starts), then PeakHourShape (SHOP_PEAK_USERS=120), then Spike
(200 users at once). RSS of each process and its children is sampled every second; the table shows each phase's
highest. Grafana is not installable here and is not measured. RSS of a native process stands in for the
container's memory (a cgroup also counts page cache, which the kernel reclaims before it kills).

Not a test: the numbers belong to the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the Prometheus/Alertmanager launchers, the OTLP receiver, compose.yaml

from load_capacity import otlp_backends  # noqa: E402

from otlp_receiver import OtlpReceiver  # noqa: E402
from prom import Alertmanager, Prometheus  # noqa: E402
from shoplib.services import RESPONDER, SERVICES  # noqa: E402
from shoplib.supervisor import Supervisor, free_ports, poll_until  # noqa: E402
from stack import services as compose_services  # noqa: E402

SHOPPERS = REPO / "locustfiles" / "locustfile.py"
SINK = REPO / "alertmanager" / "webhook_sink.py"
PHASES = ("idle", "peak", "spike")
MIB = 1024 * 1024


@dataclass
class Component:
    """One compose service's process, natively; `stop` ends it and returns once it has exited."""

    name: str
    process: psutil.Process
    stop: Callable[[], None] | None  # None: started elsewhere, left running
    highest: dict[str, float] = field(default_factory=dict)  # phase -> MiB
    stop_seconds: float | None = None

    def rss_mib(self) -> float:
        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for process in tree:
            with suppress(psutil.Error):  # a child may end between the listing and the reading
                total += process.memory_info().rss
        return total / MIB


def limit_mib(service: str) -> float | None:
    """compose.yaml's memory limit of `service` in MiB (Docker's M is MiB)."""
    raw = compose_services().get(service, {}).get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    if raw is None:
        return None
    match = re.fullmatch(r"(\d+)([MG])", str(raw))
    if match is None:
        return None
    return int(match.group(1)) * (1024 if match.group(2) == "G" else 1)


def allocator_env(service: str) -> dict[str, str]:
    """The glibc allocator settings (MALLOC_*) compose.yaml gives `service`."""
    environment = compose_services().get(service, {}).get("environment", {})
    return {name: str(value) for name, value in environment.items() if name.startswith("MALLOC_")}


def timed_sigterm(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return stop


@contextmanager
def spawned(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def locust_state(api: str) -> dict[str, Any]:
    state: dict[str, Any] = requests.get(f"{api}/stats/requests", timeout=10).json()
    return state


def locust_running(api: str) -> bool:
    try:
        state = locust_state(api)
    except requests.RequestException:
        return False
    return bool(state["state"] == "running" and state["user_count"] > 0)


def sample(components: list[Component], phase: str, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        for component in components:
            component.highest[phase] = max(component.highest.get(phase, 0.0), component.rss_mib())
        time.sleep(1)


def run_shape(api: str, components: list[Component], phase: str, shape: str, longest_s: float) -> str:
    """Start `shape` in the web UI's way (the picker's form), sample until it ends; Locust's totals for it."""
    requests.post(f"{api}/stop", timeout=10)
    requests.post(f"{api}/stats/reset", timeout=10)
    requests.post(f"{api}/swarm", data={"shape_class": shape}, timeout=10).raise_for_status()
    started = time.monotonic()
    progress = threading.Event()

    def report() -> None:
        while not progress.wait(30):
            state = locust_state(api)
            print(
                f"  {phase}: {time.monotonic() - started:4.0f} s, {state['user_count']} users, "
                f"{state['total_rps']:.0f} req/s",
                flush=True,
            )

    threading.Thread(target=report, daemon=True).start()
    time.sleep(5)  # the shape's first tick
    sample(components, phase, longest_s, done=lambda: locust_state(api)["state"] == "stopped")
    progress.set()
    return totals(api)


def totals(api: str) -> str:
    stats = locust_state(api)
    total = next(row for row in stats["stats"] if row["name"] == "Aggregated")
    p95 = total.get("response_time_percentile_0.95", "?")
    return f"{total['num_requests']} requests, {total['num_failures']} failed, p95 {p95} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--peak-duration", default="5m", help="SHOP_PEAK_DURATION for the peak phase (default 5m)")
    parser.add_argument("--spike-duration", default="3m", help="SHOP_SPIKE_DURATION (default 3m)")
    parser.add_argument("--traces-endpoint", help="OTLP/HTTP traces URL (default: the tests' receiver)")
    parser.add_argument("--logs-endpoint", help="OTLP/HTTP logs URL (default: the tests' receiver)")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID", help="also sample this process")
    args = parser.parse_args(argv)
    watched = []
    for item in args.watch:
        name, _, pid = item.partition("=")
        if not name or not pid.isdigit() or not psutil.pid_exists(int(pid)):
            parser.error(f"--watch: expected NAME=PID of a running process, got {item!r}")
        watched.append(Component(name, psutil.Process(int(pid)), None))

    with tempfile.TemporaryDirectory(prefix="shoplab-footprint-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        env = {**os.environ, "SHOP_ENV": "dev", "OTEL_LOGS_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "otlp"}
        if not (args.traces_endpoint and args.logs_endpoint):
            receiver = OtlpReceiver().start()
            stack.callback(receiver.stop)
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
            print(f"telemetry: the tests' OTLP receiver at {receiver.endpoint} (a double, not Tempo or Loki)")
        env |= otlp_backends(args.traces_endpoint, args.logs_endpoint)

        print("starting the shop and the responder (seeding 250 000 orders takes a minute)", flush=True)
        out = stack.enter_context((workdir / "shop.stdout").open("wb"))
        ports = dict(zip((*SERVICES, RESPONDER), free_ports(len(SERVICES) + 1), strict=True))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        supervisors: list[Supervisor] = []
        for service in (*SERVICES, RESPONDER):  # each with the allocator settings compose gives it
            one = Supervisor(
                workdir / "data", ports, services=(service,), environ={**env, **allocator_env(service)}, stdout=out
            ).start()
            stack.callback(one.stop)
            processes[service] = one.processes[service]
            supervisors.append(one)
        if not all(one.wait_ready(300) for one in supervisors):
            print(f"the shop did not start; see {workdir / 'shop.stdout'}", file=sys.stderr)
            return 1
        urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
        sink_port, locust_port, master_port = free_ports(3)
        sink = stack.enter_context(
            spawned([sys.executable, str(SINK)], workdir / "sink.log", {**env, "PORT": str(sink_port)})
        )
        alertmanager = Alertmanager(
            workdir,
            f"http://127.0.0.1:{sink_port}/alerts",
            f"{urls[RESPONDER]}/alerts",
            supervisors[0].secret("RESPONDER_TOKEN"),  # generated in the shop's data folder
        ).start()
        stack.callback(alertmanager.stop)
        prometheus = Prometheus(workdir, ports, alertmanager=alertmanager.address).start()
        stack.callback(prometheus.stop)

        locust_env = {
            **env,
            "SHOP_CATALOG_URL": urls["catalog"],
            "SHOP_CHECKOUT_URL": urls["checkout"],
            "SHOP_AUTH_URL": urls["auth"],
            "SHOP_PEAK_DURATION": args.peak_duration,
            "SHOP_SPIKE_DURATION": args.spike_duration,
        }
        locust = [sys.executable, "-m", "locust", "-f", str(SHOPPERS)]
        master = stack.enter_context(
            spawned(
                [
                    *locust,
                    "--master",
                    "--class-picker",
                    "--autostart",
                    "--shape",
                    "Steady",
                    "-u",
                    "10",
                    "-r",
                    "1",
                    "--web-host",
                    "127.0.0.1",
                    "--web-port",
                    str(locust_port),
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(master_port),
                ],
                workdir / "locust-master.log",
                locust_env,
            )
        )
        worker = stack.enter_context(
            spawned(
                [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
                workdir / "locust-worker.log",
                locust_env,
            )
        )
        api = f"http://127.0.0.1:{locust_port}"
        poll_until(lambda: locust_running(api), timeout=60, what="Locust to run Steady")

        assert prometheus.process is not None and alertmanager.process is not None
        components = [
            *(
                Component(s, psutil.Process(processes[s].pid), timed_sigterm(processes[s]))
                for s in (*SERVICES, RESPONDER)
            ),
            Component("prometheus", psutil.Process(prometheus.process.pid), prometheus.stop),
            Component("alertmanager", psutil.Process(alertmanager.process.pid), alertmanager.stop),
            Component("alert-sink", psutil.Process(sink.pid), timed_sigterm(sink)),
            Component("locust-master", psutil.Process(master.pid), timed_sigterm(master)),
            Component("locust-worker", psutil.Process(worker.pid), timed_sigterm(worker)),
            *watched,
        ]

        print(f"idle: Steady, 10 users, {args.idle_seconds:.0f} s", flush=True)
        requests.post(f"{api}/stats/reset", timeout=10)
        sample(components, "idle", args.idle_seconds)
        print(f"  idle: {totals(api)}")
        print(f"peak: PeakHourShape over {args.peak_duration}", flush=True)
        print(f"  peak: {run_shape(api, components, 'peak', 'PeakHourShape', 3600)}")
        print(f"spike: Spike over {args.spike_duration}", flush=True)
        print(f"  spike: {run_shape(api, components, 'spike', 'Spike', 3600)}")

        # Stop as compose does, dependents first, under the lab's usual traffic.
        requests.post(f"{api}/swarm", data={"shape_class": "Steady", "user_count": 10, "spawn_rate": 1}, timeout=10)
        time.sleep(10)
        print("stopping each on SIGTERM", flush=True)
        for name in (
            "locust-worker",
            "locust-master",
            RESPONDER,
            "alert-sink",
            "alertmanager",
            "prometheus",
            "checkout",
            "payment",
            "catalog",
            "auth",
        ):
            component = next(c for c in components if c.name == name)
            assert component.stop is not None
            started = time.monotonic()
            component.stop()
            component.stop_seconds = time.monotonic() - started

        print()
        print(f"{'container':<14} {'limit':>6} {'idle':>6} {'peak':>6} {'spike':>6} {'of limit':>8} {'stop':>6}")
        total_limit = 0.0
        for component in components:
            limit = limit_mib(component.name)
            total_limit += limit or 0
            highest = max(component.highest.values(), default=0.0)
            share = f"{highest / limit:.0%}" if limit else "-"
            stop = f"{component.stop_seconds:.1f}s" if component.stop_seconds is not None else "-"
            cells = " ".join(f"{component.highest.get(p, 0):5.0f}M" for p in PHASES)
            print(f"{component.name:<14} {f'{limit:.0f}M' if limit else '-':>6} {cells} {share:>8} {stop:>6}")
        print(
            f"(RSS in MiB, each phase's highest; limits from compose.yaml add up to {total_limit / 1024:.2f} GiB "
            "for the processes above)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
