"""`python -m shoplib.run`: the four services natively on 127.0.0.1, in the foreground (`make services`).

Each runs exactly as in its container (`python -m shoplib.serve <service>`). Ctrl-C or SIGTERM stops
all four gracefully; if one dies, the others are stopped too. Ports come from CATALOG_PORT,
CHECKOUT_PORT, PAYMENT_PORT, AUTH_PORT (8081-8084 by default); OTEL_* variables pass through.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .config import ConfigError, integer
from .serve import SERVICES

DEFAULT_PORTS = {"catalog": 8081, "checkout": 8082, "payment": 8083, "auth": 8084}
APPS_DIR = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180  # the first start seeds a quarter of a million orders
STOP_TIMEOUT_S = 20


def ports_from_env(environ: dict[str, str]) -> dict[str, int]:
    ports = {}
    for service, default in DEFAULT_PORTS.items():
        name = f"{service.upper()}_PORT"
        try:
            ports[service] = integer(1, 65535)(environ[name]) if environ.get(name) else default
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return ports


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def service_env(service: str, ports: dict[str, int], data_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    env.setdefault("SHOP_ENV", "dev")
    env["DATA_DIR"] = str(data_dir / service)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS_DIR), environ.get("PYTHONPATH")]))
    env.setdefault("AUTH_URL", f"http://127.0.0.1:{ports['auth']}")
    env.setdefault("CATALOG_URL", f"http://127.0.0.1:{ports['catalog']}")
    env.setdefault("PAYMENT_URL", f"http://127.0.0.1:{ports['payment']}")
    if not any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        # Natively there is no Tempo on localhost unless you say so; don't retry into the void.
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
    return env


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Shop:
    def __init__(self, services: list[str], ports: dict[str, int], data_dir: Path) -> None:
        self.services = services
        self.ports = ports
        self.data_dir = data_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for service in self.services:
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "shoplib.serve", service, "--port", str(self.ports[service])],
                env=service_env(service, self.ports, self.data_dir, dict(os.environ)),
                # Own process group: Ctrl-C reaches only this runner, which stops the services gracefully
                # (gunicorn treats SIGINT as a hard stop, SIGTERM as a graceful one).
                start_new_session=True,
            )

    def dead(self) -> list[str]:
        return [service for service, process in self.processes.items() if process.poll() is not None]

    def wait_ready(self, stopping: list[bool]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = set(self.services)
        while waiting and time.monotonic() < deadline and not stopping and not self.dead():
            waiting = {service for service in waiting if not is_ready(self.ports[service])}
            time.sleep(0.25 if waiting else 0)
        return not waiting

    def stop(self) -> int:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        worst = 0
        for service, process in self.processes.items():
            try:
                code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"shop: {service} did not stop in {STOP_TIMEOUT_S} s; killing it", file=sys.stderr)
                process.kill()
                code = process.wait()
            worst = max(worst, abs(code))
        return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shoplib.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="one folder per service (default: data)")
    parser.add_argument("--services", default=",".join(SERVICES), help="comma-separated subset to start")
    args = parser.parse_args(argv)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = sorted(set(services) - set(SERVICES))
    if unknown or not services:
        parser.error(f"--services: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(SERVICES)}")
    try:
        ports = ports_from_env(dict(os.environ))
    except ConfigError as exc:
        print(f"shop: {exc}", file=sys.stderr)
        return 2
    busy = [f"{ports[s]} ({s}; set {s.upper()}_PORT to move it)" for s in services if port_in_use(ports[s])]
    if busy:
        print(f"shop: port already in use: {', '.join(busy)}", file=sys.stderr)
        return 2

    stopping: list[bool] = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    shop = Shop(services, ports, args.data_dir)
    shop.start()
    if shop.wait_ready(stopping):
        urls = "  ".join(f"{s} http://127.0.0.1:{ports[s]}" for s in services)
        print(f"shop: ready  {urls}  (Ctrl-C stops)", file=sys.stderr, flush=True)
    while not stopping and not shop.dead():
        time.sleep(0.2)
    dead = shop.dead()
    if dead and not stopping:
        print(f"shop: {', '.join(dead)} exited; stopping the others", file=sys.stderr)
    code = shop.stop()
    return 1 if dead and not stopping else code


if __name__ == "__main__":
    sys.exit(main())
