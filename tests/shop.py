"""Helpers for tests that run the real services: start them with the project's runner, talk HTTP."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import requests

from incident.drills import SupervisedShop
from shoplib import supervisor
from shoplib.services import SERVICES
from shoplib.supervisor import Supervisor

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
GOOD_CARD = {"number": "4242424242424242", "expiry": "12/39", "cvc": "123"}
DECLINING_CARD = {"number": "4000000000000002", "expiry": "12/39", "cvc": "123"}
# The customers' documented passwords; the admin's is generated in the shop's data folder (SupervisedShop).
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass"}


def poll_until(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """shoplib's poll_until, failing the test (not erroring it) when time runs out."""
    try:
        return supervisor.poll_until(probe, timeout, interval, what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


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


def exporting_to(endpoint: str, delay_ms: int = 100, **more: str) -> dict[str, str]:
    """A shop's environment that sends traces and logs over OTLP to `endpoint`, in batches every `delay_ms` (the
    SDK's 5 s default would leave a test waiting), plus `more`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
        "OTEL_BLRP_SCHEDULE_DELAY": str(delay_ms),
        **more,
    }


class ShopUnderTest(SupervisedShop):
    """A native shop (shoplib's Supervisor: free ports, data in `workdir`) with its stdout kept for log
    assertions, and the shop's API as a client uses it. Drills take it as their target."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, services: tuple[str, ...] = SERVICES):
        super().__init__(Supervisor(workdir / "data", services=services, environ={**os.environ, **(env or {})}))
        self.workdir = workdir
        self.stdout_path = workdir / "shop.stdout"
        self.stderr_path = workdir / "shop.stderr"
        self.supervisor = self.shop
        self.ports = self.supervisor.ports
        self.session = requests.Session()

    def start(self, timeout: float = 120) -> ShopUnderTest:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.supervisor.stdout, self.supervisor.stderr = out, err
            self.supervisor.start()
        if not self.supervisor.wait_ready(timeout):
            self.supervisor.stop()
            raise AssertionError(f"the shop did not become ready:\n{self.stderr_path.read_text()[-3000:]}")
        return self

    def stop(self) -> int:
        return self.supervisor.stop()

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line the services printed so far (a line that is not JSON fails the test)."""
        lines = self.stdout_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def logs(self, **fields: Any) -> list[dict[str, Any]]:
        """The printed JSON lines whose fields have the given values, e.g. logs(message="order_paid")."""
        return [line for line in self.log_lines() if all(line.get(k) == v for k, v in fields.items())]

    # --- the shop's API, as a client uses it ---

    def login(self, user: str) -> str:
        password = self.admin_password if user == "admin" else PASSWORDS[user]
        response = self.session.post(self.url("auth", "/login"), json={"username": user, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def order(
        self, token: str, items: list[dict[str, int]], card: dict[str, str] = GOOD_CARD, key: str | None = None
    ) -> requests.Response:
        return self.session.post(
            self.url("checkout", "/orders"),
            json={"items": items, "card": card},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key or uuid.uuid4().hex},
        )

    def stock(self, product_id: int) -> int:
        return int(self.session.get(self.url("catalog", f"/products/{product_id}")).json()["stock"])

    def set_stock(self, product_id: int, stock: int) -> None:
        """Test set-up only: the catalog has no API to change stock, so write its database directly."""
        path = self.workdir / "data" / "catalog" / "catalog.db"
        with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as db:  # autocommit
            db.execute("UPDATE products SET stock = ? WHERE id = ?", (stock, product_id))

    def set_faults(self, service: str, admin_token: str, faults: dict[str, Any]) -> requests.Response:
        return self.session.put(
            self.url(service, "/admin/faults"), json=faults, headers={"Authorization": f"Bearer {admin_token}"}
        )

    def exercise_every_route(self, admin_token: str) -> None:
        """One pass over every route of every service, as a short mixed load: paid and declined orders
        (which reserve and release stock, and pay), reads, logins, admin reads, a 404 and a request gunicorn
        refuses (a header over its limit: 431) per service."""
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
            with contextlib.suppress(requests.RequestException):  # refused with Connection: close
                requests.get(self.url(service, "/products"), headers={"X-Oversized": "a" * 10_000}, timeout=5)

    def clear_faults(self, service: str, admin_token: str) -> requests.Response:
        return self.session.delete(
            self.url(service, "/admin/faults"), headers={"Authorization": f"Bearer {admin_token}"}
        )


def load_locustfile_module(name: str) -> ModuleType:
    """A plain helper module of locustfiles/ (one that does not import Locust), imported under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"locustfiles_{name}", REPO / "locustfiles" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module
