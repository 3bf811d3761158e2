"""Incidents injected on purpose into a running native shop, and a steady stream of customers to feel them:
what the diagnosis tests and benchmark (and, later, the scenarios) break the shop with.

Two kinds: the shop's own faults (through /admin/faults), and incidents from outside that the shop knows
nothing about (a process stopped and resumed with SIGSTOP/SIGCONT, another process holding a service's SQLite
write lock or dropping one of its indexes, a CPU taken away by a noisy neighbour). Diagnosis never imports
this module: it must find these from symptoms alone.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from shoplib.supervisor import Supervisor

Undo = Callable[[], None]
GOOD_CARD = {"number": "4242424242424242", "expiry": "12/39", "cvc": "123"}
CUSTOMERS = {"alice": "alice-pass", "bob": "bob-pass"}


class AdminTarget(Protocol):
    """A running shop reached over HTTP: where each service answers, and an admin token for it."""

    @property
    def urls(self) -> Mapping[str, str]: ...

    def admin_token(self) -> str: ...


class Target(AdminTarget, Protocol):
    """A running native shop: also its data and its process groups."""

    @property
    def data_dir(self) -> Path: ...

    def process_group(self, service: str) -> int: ...


class SupervisedShop:
    """A native shop started by shoplib's Supervisor, as a drill target (the benchmarks' shop)."""

    def __init__(self, shop: Supervisor) -> None:
        self.shop = shop

    @property
    def admin_password(self) -> str:
        """The password auth seeded the admin with: the environment's, or the data folder's generated one."""
        return self.shop.secret("DEMO_ADMIN_PASSWORD")

    @property
    def urls(self) -> Mapping[str, str]:
        return self.shop.urls

    @property
    def data_dir(self) -> Path:
        return self.shop.data_dir

    def process_group(self, service: str) -> int:
        return self.shop.processes[service].pid  # each service leads its own session

    def admin_token(self) -> str:
        credentials = {"username": "admin", "password": self.admin_password}
        response = requests.post(f"{self.urls['auth']}/login", json=credentials, timeout=10)
        response.raise_for_status()
        return str(response.json()["access_token"])


@dataclass(frozen=True)
class Drill:
    name: str
    service: str  # the culprit a diagnosis must name
    operation: str | None  # the operation it must name, where the incident has one
    inject: Callable[[Target], Undo]
    outside: bool = False  # injected by means the shop knows nothing about


def admin_fault(service: str, faults: Mapping[str, Mapping[str, Any]]) -> Callable[[AdminTarget], Undo]:
    def inject(target: AdminTarget) -> Undo:
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


def _tasks_of_group(group: int) -> list[int]:
    """Every thread of every process in a process group (affinity and priority are per thread on Linux)."""
    tasks = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # pgrp: the fields after ") state ppid pgrp"
                tasks += [int(task.name) for task in (entry / "task").iterdir()]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return tasks


def starve_cpu(service: str, burners: int = 2) -> Callable[[Target], Undo]:
    """Squeeze the service onto one core at the lowest priority, beside processes that burn that core: a noisy
    neighbour taking the CPU away."""

    def inject(target: Target) -> Undo:
        core = min(os.sched_getaffinity(0))
        group = target.process_group(service)
        tasks = _tasks_of_group(group)
        saved = {task: (os.sched_getaffinity(task), os.getpriority(os.PRIO_PROCESS, task)) for task in tasks}
        for task in tasks:
            os.sched_setaffinity(task, {core})
            os.setpriority(os.PRIO_PROCESS, task, 19)
        # With the kernel's autogroups, CPU is shared between sessions first and nice counts only inside one:
        # lower the service's whole session too, and give each hog a session of its own.
        autogroup_nice = _set_autogroup_nice(group, 19)
        burn = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
        hogs = [subprocess.Popen([sys.executable, "-c", burn], start_new_session=True) for _ in range(burners)]

        def undo() -> None:
            for hog in hogs:
                hog.kill()
                hog.wait()
            if autogroup_nice is not None:
                _set_autogroup_nice(group, autogroup_nice)
            for task, (affinity, priority) in saved.items():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(task, affinity)
                    os.setpriority(os.PRIO_PROCESS, task, priority)

        return undo

    return inject


def _set_autogroup_nice(pid: int, nice: int) -> int | None:
    """Set the nice value of the autogroup (session) `pid` belongs to; the previous value, or None where the
    kernel has no autogroups."""
    path = Path(f"/proc/{pid}/autogroup")
    try:
        previous = int(path.read_text().split("nice")[1])
        path.write_text(str(nice))
    except (OSError, IndexError, ValueError):
        return None
    return previous


def alter_database(service: str, change: str, restore: str) -> Callable[[Target], Undo]:
    """Another process changes the service's schema behind its back (and puts it back on undo)."""

    def inject(target: Target) -> Undo:
        path = target.data_dir / service / f"{service}.db"

        def run(statement: str) -> None:
            with contextlib.closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
                conn.execute(statement)

        run(change)
        return lambda: run(restore)

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
        Drill("starved-auth", "auth", None, starve_cpu("auth"), outside=True),
        Drill(
            "dropped-index-outside",
            "checkout",
            "orders.list_by_user",
            alter_database(
                "checkout",
                "DROP INDEX IF EXISTS idx_orders_user_id",
                "CREATE INDEX IF NOT EXISTS idx_orders_user_id ON orders (user_id, created_at)",
            ),
            outside=True,
        ),
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
