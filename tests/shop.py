"""Helpers for tests that run the real services: start them with the project's runner, talk HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("catalog", "checkout", "payment", "auth")
GOOD_CARD = {"number": "4242424242424242", "expiry": "12/39", "cvc": "123"}
DECLINING_CARD = {"number": "4000000000000002", "expiry": "12/39", "cvc": "123"}
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "admin": "admin-pass"}

T = TypeVar("T")


def poll_until(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def python(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python <args>` in a child process (this interpreter), output captured, env added to ours."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Shop:
    """The four services started by `python -m shoplib.run`, stdout captured for log assertions."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, services: tuple[str, ...] = SERVICES):
        self.workdir = workdir
        self.services = services
        self.ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        self.env = {
            **os.environ,
            **{f"{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            "PYTHONPATH": str(REPO / "apps"),
            **(env or {}),
        }
        self.stdout_path = workdir / "shop.stdout"
        self.stderr_path = workdir / "shop.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def start(self, timeout: float = 120) -> Shop:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shoplib.run",
                    "--data-dir",
                    str(self.workdir / "data"),
                    "--services",
                    ",".join(self.services),
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=err,
            )
        poll_until(self._ready, timeout=timeout, interval=0.25, what=f"the shop to be ready ({self.stderr_path})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the runner exited early:\n{self.stderr_path.read_text()}")
        return "shop: ready" in self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line the services printed so far (a line that is not JSON fails the test)."""
        lines = self.stdout_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def logs(self, **fields: Any) -> list[dict[str, Any]]:
        """The printed JSON lines whose fields have the given values, e.g. logs(message="order_paid")."""
        return [line for line in self.log_lines() if all(line.get(k) == v for k, v in fields.items())]

    # --- the shop's API, as a client uses it ---

    def login(self, user: str) -> str:
        response = self.session.post(self.url("auth", "/login"), json={"username": user, "password": PASSWORDS[user]})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def order(
        self, token: str, items: list[dict[str, int]], card: dict[str, str] = GOOD_CARD, key: str | None = None
    ) -> requests.Response:
        return self.session.post(
            self.url("checkout", "/orders"),
            json={"items": items, "card": card},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key or uuid.uuid4().hex},
        )

    def stock(self, product_id: int) -> int:
        return self.session.get(self.url("catalog", f"/products/{product_id}")).json()["stock"]

    def set_stock(self, product_id: int, stock: int) -> None:
        """Test set-up only: the catalog has no API to change stock, so write its database directly."""
        with sqlite3.connect(self.workdir / "data" / "catalog" / "catalog.db", timeout=10) as db:
            db.execute("UPDATE products SET stock = ? WHERE id = ?", (stock, product_id))

    def set_faults(self, service: str, admin_token: str, faults: dict[str, Any]) -> requests.Response:
        return self.session.put(
            self.url(service, "/admin/faults"), json=faults, headers={"Authorization": f"Bearer {admin_token}"}
        )

    def exercise_every_route(self, admin_token: str) -> None:
        """One pass over every route of every service, as a short mixed load: paid and declined orders
        (which reserve and release stock, and pay), reads, logins, admin reads and a 404 per service."""
        token = self.login("alice")
        paid = self.order(token, [{"product_id": 51, "quantity": 1}])
        self.order(token, [{"product_id": 52, "quantity": 1}], card=DECLINING_CARD)
        bearer = {"Authorization": f"Bearer {token}"}
        self.session.get(self.url("checkout", "/orders"), headers=bearer)
        self.session.get(self.url("checkout", f"/orders/{paid.json()['order_id']}"), headers=bearer)
        self.session.get(self.url("catalog", "/products?q=kettle"))
        self.session.get(self.url("catalog", "/products/7"))
        self.session.get(self.url("auth", "/verify"), headers=bearer)
        for service in SERVICES:
            self.session.get(self.url(service, "/admin/faults"), headers={"Authorization": f"Bearer {admin_token}"})
            self.session.get(self.url(service, "/no-such-page"))

    def clear_faults(self, service: str, admin_token: str) -> requests.Response:
        return self.session.delete(
            self.url(service, "/admin/faults"), headers={"Authorization": f"Bearer {admin_token}"}
        )
