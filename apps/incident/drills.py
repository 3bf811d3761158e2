"""Incidents injected on purpose into a running native shop, and a steady stream of customers to feel them:
what the diagnosis tests and benchmark (and, later, the scenarios) break the shop with.

Two kinds: the shop's own faults (through /admin/faults), and incidents from outside that the shop knows
nothing about (a process stopped and resumed with SIGSTOP/SIGCONT, another process holding a service's
SQLite write lock). Diagnosis never imports this module: it must find these from symptoms alone.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

Undo = Callable[[], None]
GOOD_CARD = {"number": "4242424242424242", "expiry": "12/39", "cvc": "123"}
CUSTOMERS = {"alice": "alice-pass", "bob": "bob-pass"}


class Target(Protocol):
    """A running native shop: where each service answers, its data, and its process groups."""

    @property
    def urls(self) -> Mapping[str, str]: ...

    @property
    def data_dir(self) -> Path: ...

    def process_group(self, service: str) -> int: ...

    def admin_token(self) -> str: ...


@dataclass(frozen=True)
class Drill:
    name: str
    service: str  # the culprit a diagnosis must name
    operation: str | None  # the operation it must name, where the incident has one
    inject: Callable[[Target], Undo]
    outside: bool = False  # injected by means the shop knows nothing about


def admin_fault(service: str, faults: Mapping[str, Mapping[str, Any]]) -> Callable[[Target], Undo]:
    def inject(target: Target) -> Undo:
        headers = {"Authorization": f"Bearer {target.admin_token()}"}
        url = f"{target.urls[service]}/admin/faults"
        requests.put(url, json=faults, headers=headers, timeout=10).raise_for_status()
        return lambda: requests.delete(url, headers=headers, timeout=10).raise_for_status()

    return inject


def _cycle(stop: threading.Event, name: str, hold_s: float, release_s: float, hold: Callable[[], Undo]) -> Undo:
    """Run hold() / its undo in turns until stopped, on a thread; the returned undo stops and releases."""

    def run() -> None:
        while not stop.is_set():
            release = hold()
            try:
                stop.wait(hold_s)
            finally:
                release()
            stop.wait(release_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def undo() -> None:
        stop.set()
        thread.join()

    return undo


def stall_process(service: str, stopped_s: float = 2.5, running_s: float = 0.5) -> Callable[[Target], Undo]:
    """SIGSTOP the service's processes, SIGCONT them a moment later, again and again: a process that hangs."""

    def inject(target: Target) -> Undo:
        group = target.process_group(service)

        def hold() -> Undo:
            os.killpg(group, signal.SIGSTOP)
            return lambda: os.killpg(group, signal.SIGCONT)

        return _cycle(threading.Event(), f"stall-{service}", stopped_s, running_s, hold)

    return inject


def hold_write_lock(service: str, held_s: float = 1.5, free_s: float = 0.2) -> Callable[[Target], Undo]:
    """Another process's connection takes the service's SQLite write lock (BEGIN IMMEDIATE) and sits on it."""

    def inject(target: Target) -> Undo:
        path = target.data_dir / service / f"{service}.db"
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)

        def hold() -> Undo:
            conn.execute("BEGIN IMMEDIATE")

            def release() -> None:
                conn.execute("COMMIT")

            return release

        stop = _cycle(threading.Event(), f"lock-{service}", held_s, free_s, hold)

        def undo() -> None:
            stop()
            conn.close()

        return undo

    return inject


def catalogue() -> list[Drill]:
    """Every fault the shop offers, on every service it exists on, and incidents from outside."""
    drills = []
    for service, route, operation in (
        ("catalog", "/products/", "GET /products/<int:product_id>"),
        ("checkout", "/orders", None),  # GET and POST /orders both slow: either is right
        ("payment", "/payments", "POST /payments"),
        ("auth", "/verify", "GET /verify"),
    ):
        for fault, params in (("latency", {"ms": 300}), ("errors", {"rate": 0.5})):
            inject = admin_fault(service, {fault: {**params, "route": route}})
            drills.append(Drill(f"{fault}-{service}", service, operation, inject))
    db_lock = {"db_lock": {"hold_ms": 1500, "release_ms": 100}}
    drills += [
        Drill(
            "gateway-errors", "payment", "gateway authorize", admin_fault("payment", {"gateway_errors": {"rate": 0.5}})
        ),
        Drill("db-lock", "checkout", None, admin_fault("checkout", db_lock)),
        Drill("missing-index", "checkout", "orders.list_by_user", admin_fault("checkout", {"missing_index": {}})),
        Drill("stalled-payment", "payment", None, stall_process("payment"), outside=True),
        Drill("stalled-catalog", "catalog", None, stall_process("catalog"), outside=True),
        Drill("locked-checkout-db", "checkout", None, hold_write_lock("checkout"), outside=True),
    ]
    return drills


class Traffic:
    """Customers on threads: mostly browsing, some listing their orders, some ordering. Bounded: it stops
    when told to, and each request times out."""

    def __init__(self, urls: Mapping[str, str], customers: int = 4, pause_s: float = 0.05) -> None:
        self.urls = urls
        self.customers = customers
        self.pause_s = pause_s
        self.requests = 0
        self.failures = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Traffic:
        for index in range(self.customers):
            thread = threading.Thread(target=self._customer, args=(index,), name=f"customer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _customer(self, index: int) -> None:
        rng = random.Random(index)
        session = requests.Session()
        name = list(CUSTOMERS)[index % len(CUSTOMERS)]
        token = ""
        while not self._stop.is_set():
            try:
                if not token:
                    token = self._login(session, name)
                self._act(session, rng, token)
            except requests.RequestException:
                self._count(failed=True)
            self._stop.wait(self.pause_s)

    def _login(self, session: requests.Session, name: str) -> str:
        credentials = {"username": name, "password": CUSTOMERS[name]}
        response = session.post(f"{self.urls['auth']}/login", json=credentials, timeout=10)
        self._count(failed=response.status_code != 200)
        return str(response.json().get("access_token", "")) if response.status_code == 200 else ""

    def _act(self, session: requests.Session, rng: random.Random, token: str) -> None:
        bearer = {"Authorization": f"Bearer {token}"}
        roll = rng.random()
        if roll < 0.45:
            response = session.get(f"{self.urls['catalog']}/products", params={"q": rng.choice("aeiou")}, timeout=10)
        elif roll < 0.7:
            response = session.get(f"{self.urls['catalog']}/products/{rng.randint(1, 500)}", timeout=10)
        elif roll < 0.85:
            response = session.get(f"{self.urls['checkout']}/orders", headers=bearer, timeout=10)
        else:
            item = {"product_id": rng.randint(1, 500), "quantity": 1}
            response = session.post(
                f"{self.urls['checkout']}/orders",
                json={"items": [item], "card": GOOD_CARD},
                headers={**bearer, "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
        self._count(failed=response.status_code >= 500)

    def _count(self, failed: bool) -> None:
        with self._lock:
            self.requests += 1
            self.failures += failed
