"""`python -m shoplib.supervisor`: the four services and the responder natively on 127.0.0.1, in the foreground
(`make services`).

Each runs exactly as in its container (`python -m shoplib.serve <service>`, one gunicorn each); this module
only starts, watches and stops them. Ctrl-C or SIGTERM stops them all gracefully; if one dies, the others are
stopped too. Ports come from CATALOG_PORT, CHECKOUT_PORT, PAYMENT_PORT, AUTH_PORT, RESPONDER_PORT (8081-8085
by default); OTEL_*, PROMETHEUS_URL, RESPONDER_MODE and the like pass through. Unless JWT_SECRET or
JWT_SECRET_FILE is given, they all sign and verify tokens with `<data dir>/jwt-secret`, generated on the first start.

`Supervisor` is also the one way tests, benchmarks and `shoplab` start a native shop (free ports, their own
data folder, stdout captured).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

from .config import ConfigError, integer, read_secret_file
from .services import DEFAULT_PORTS, RESPONDER, SERVICES, native_url

STARTABLE = (*SERVICES, RESPONDER)

APPS_DIR = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180  # the first start seeds a quarter of a million orders
STOP_TIMEOUT_S = 20
NATIVE_DATA_DIR = "data"  # `make services` keeps its data here, relative to where it runs
JWT_SECRET_NAME = "jwt-secret"
# What a native shop generates in its data folder when the environment gives none: variable → file. No native
# run signs with, logs in with or pages with a value anyone could read in this repository.
GENERATED_SECRETS = {
    "JWT_SECRET": JWT_SECRET_NAME,
    "DEMO_ADMIN_PASSWORD": "admin-password",
    "RESPONDER_TOKEN": "responder-token",
}

T = TypeVar("T")


def poll_until(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ports_from_env(environ: Mapping[str, str]) -> dict[str, int]:
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


def service_env(service: str, ports: Mapping[str, int], data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    env.setdefault("SHOP_ENV", "dev")
    env["DATA_DIR"] = str(data_dir / service)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS_DIR), environ.get("PYTHONPATH")]))
    for dependency in SERVICES:  # checkout calls three of them, the responder all four
        env.setdefault(f"{dependency.upper()}_URL", native_url(dependency, ports[dependency]))
    if not any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        # Natively there is no Tempo on localhost unless you say so; don't retry into the void.
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
    return env


def secret_file(data_dir: Path, name: str = JWT_SECRET_NAME) -> Path:
    """`<data_dir>/<name>`, made on first use: 48 random bytes, URL-safe (a signing key for HS256, which wants 256
    bits; this is 384), that only its owner can read. One per data folder, so every native shop has its own, and
    they survive restarts."""
    path = data_dir / name
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{name}-")  # mode 0600, whatever the umask
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        os.link(temporary, path)  # complete or absent, and never replaced: two first starts keep one secret
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return path


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


class Supervisor:
    """Starts the chosen services as `python -m shoplib.serve` children, waits for them, stops them.

    Every child gets its own process group, so a Ctrl-C at the terminal reaches only the supervisor, which
    stops them with SIGTERM (gunicorn's graceful stop; SIGINT would be its hard stop).
    """

    def __init__(
        self,
        data_dir: Path,
        ports: Mapping[str, int] | None = None,
        *,
        services: Sequence[str] = SERVICES,
        environ: Mapping[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        unknown = sorted(set(services) - set(STARTABLE))
        if unknown or not services:
            raise ValueError(f"unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(STARTABLE)}")
        self.data_dir = data_dir
        # Every service has a port, started or not: the dependency URLs name them all.
        self.ports = dict(ports) if ports is not None else dict(zip(STARTABLE, free_ports(len(STARTABLE)), strict=True))
        self.services = tuple(services)
        self.environ = dict(os.environ if environ is None else environ)
        self.stdout = stdout
        self.stderr = stderr
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> dict[str, str]:
        return {service: native_url(service, self.ports[service]) for service in self.services}

    def start(self) -> Supervisor:
        self._share_generated_secrets()
        for service in self.services:
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "shoplib.serve", service, "--port", str(self.ports[service])],
                env=service_env(service, self.ports, self.data_dir, self.environ),
                stdout=self.stdout,
                stderr=self.stderr,
                start_new_session=True,
            )
        return self

    def _share_generated_secrets(self) -> None:
        """Natively (SHOP_ENV dev, the default here), each secret the environment does not give (GENERATED_SECRETS)
        is the data folder's own file (secret_file), handed over as `<NAME>_FILE`. It goes into `environ`, so a
        responder started beside this shop with that environment signs and pages with the same ones."""
        if self.environ.get("SHOP_ENV", "dev").strip().lower() != "dev":
            return  # elsewhere a missing secret stays an error at start
        for variable, name in GENERATED_SECRETS.items():
            if not self.environ.get(variable) and not self.environ.get(f"{variable}_FILE"):
                self.environ[f"{variable}_FILE"] = str(secret_file(self.data_dir, name).resolve())

    def secret(self, variable: str) -> str:
        """The value the services read for `variable` (given, or generated in the data folder)."""
        value = self.environ.get(variable)
        if not value and self.environ.get(f"{variable}_FILE"):
            value = read_secret_file(self.environ[f"{variable}_FILE"])
        if not value:
            raise ConfigError(f"{variable} is required but not set (nor {variable}_FILE)")
        return value.strip()

    def dead(self) -> list[str]:
        return [service for service, process in self.processes.items() if process.poll() is not None]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, stopping: Callable[[], bool] = lambda: False) -> bool:
        """True once every service answers /readyz; False if one dies, `stopping()` turns true or time runs out."""
        deadline = time.monotonic() + timeout
        waiting = set(self.services)
        while waiting and time.monotonic() < deadline and not stopping() and not self.dead():
            waiting = {service for service in waiting if not is_ready(self.ports[service])}
            time.sleep(0.25 if waiting else 0)
        return not waiting

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM to every service, SIGKILL to any still running after `timeout`; the worst exit code."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        worst = 0
        for service, process in self.processes.items():
            try:
                code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"shop: {service} did not stop in {timeout} s; killing it", file=sys.stderr)
                process.kill()
                code = process.wait()
            worst = max(worst, abs(code))
        return worst

    def __enter__(self) -> Supervisor:
        self.start()
        if not self.wait_ready():
            self.stop()
            raise RuntimeError(f"the shop did not become ready (exited: {', '.join(self.dead()) or 'none'})")
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shoplib.supervisor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(NATIVE_DATA_DIR), help="one folder per service (default: data)"
    )
    parser.add_argument("--services", default=",".join(STARTABLE), help="comma-separated subset to start")
    args = parser.parse_args(argv)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    try:
        shop = Supervisor(args.data_dir, ports_from_env(os.environ), services=services)
    except ValueError as exc:
        parser.error(f"--services: {exc}")
    except ConfigError as exc:
        print(f"shop: {exc}", file=sys.stderr)
        return 2
    busy = [
        f"{shop.ports[s]} ({s}; set {s.upper()}_PORT to move it)" for s in shop.services if port_in_use(shop.ports[s])
    ]
    if busy:
        print(f"shop: port already in use: {', '.join(busy)}", file=sys.stderr)
        return 2

    stopping: list[bool] = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    shop.start()
    if shop.wait_ready(stopping=lambda: bool(stopping)):
        urls = "  ".join(f"{service} {url}" for service, url in shop.urls.items())
        print(f"shop: ready  {urls}  (Ctrl-C stops)", file=sys.stderr, flush=True)
        password = shop.environ.get("DEMO_ADMIN_PASSWORD_FILE")
        if password and not shop.environ.get("DEMO_ADMIN_PASSWORD"):
            print(f"shop: the admin's password is in {password}", file=sys.stderr, flush=True)
    while not stopping and not shop.dead():
        time.sleep(0.2)
    dead = shop.dead()
    if dead and not stopping:
        print(f"shop: {', '.join(dead)} exited; stopping the others", file=sys.stderr)
    code = shop.stop()
    return 1 if dead and not stopping else code


if __name__ == "__main__":
    sys.exit(main())
