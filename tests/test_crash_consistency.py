"""kill -9 mid-flight: every order still reaches a final state, with no help from its client.

Under a short order load, payment's, checkout's and catalog's worker processes are killed (gunicorn starts a new
one, as a container restart would start the service again). The clients never retry. Then, from the databases:
no order is left pending or holding stock it should not; every paid order has exactly one captured payment and
no other order has one; no payment lacks an order; the catalog's stock is its initial stock minus what paid orders
took, product by product.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import psutil
import pytest
import requests

from shop import DECLINING_CARD, GOOD_CARD, ShopUnderTest, poll_until

pytestmark = pytest.mark.integration  # real services, killed

PRODUCTS = range(1, 9)  # a few products, so orders overlap on the same stock
CLIENTS = 6


@pytest.fixture
def crashable_shop(tmp_path: Path):
    env = {
        "SEED_ORDERS": "0",
        "RECONCILE_INTERVAL_S": "1",
        "ORDER_STALE_AFTER_S": "15",
        "DEPENDENCY_TIMEOUT_S": "2",
        "GATEWAY_LATENCY_MS": "40",  # a payment lasts long enough to be killed in the middle of one
    }
    shop = ShopUnderTest(tmp_path, env).start()
    yield shop
    shop.stop()


def database(shop: ShopUnderTest, service: str) -> sqlite3.Connection:
    connection = sqlite3.connect(shop.workdir / "data" / service / f"{service}.db", timeout=10)
    connection.row_factory = sqlite3.Row
    return connection


def stock(shop: ShopUnderTest) -> dict[int, int]:
    with closing(database(shop, "catalog")) as db:
        return {row["id"]: row["stock"] for row in db.execute("SELECT id, stock FROM products")}


def kill_worker(shop: ShopUnderTest, service: str) -> None:
    """SIGKILL the service's gunicorn worker (its master starts another, which recovers first), then wait for it."""
    master = psutil.Process(shop.supervisor.processes[service].pid)
    for worker in master.children():
        worker.send_signal(signal.SIGKILL)
    poll_until(lambda: _ready(shop, service), 60, 0.2, f"{service} back after the kill")


def _ready(shop: ShopUnderTest, service: str) -> bool:
    try:
        return requests.get(shop.url(service, "/readyz"), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def place_orders(shop: ShopUnderTest, token: str, stop: threading.Event, answers: Counter[int]) -> None:
    """One client: orders until told to stop, each with a new key, never retried whatever the answer."""
    session = requests.Session()
    randomness = random.Random(token)
    while not stop.is_set():
        items = [{"product_id": randomness.choice(PRODUCTS), "quantity": randomness.randint(1, 3)}]
        card = DECLINING_CARD if randomness.random() < 0.25 else GOOD_CARD
        try:
            response = session.post(
                shop.url("checkout", "/orders"),
                json={"items": items, "card": card},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            answers[response.status_code] += 1
        except requests.RequestException:
            answers[0] += 1  # checkout itself died mid-request


def settled(shop: ShopUnderTest) -> bool:
    with closing(database(shop, "checkout")) as db:
        (left,) = db.execute("SELECT COUNT(*) FROM orders WHERE status = 'pending' OR stock_to_release = 1").fetchone()
    return left == 0


def test_orders_reach_a_final_state_after_kills_and_stock_balances(crashable_shop: ShopUnderTest):
    shop = crashable_shop
    initial = stock(shop)
    tokens = [shop.login(user) for user in ("alice", "bob") for _ in range(CLIENTS // 2)]
    stop, answers = threading.Event(), Counter[int]()
    clients = [threading.Thread(target=place_orders, args=(shop, token, stop, answers)) for token in tokens]
    for client in clients:
        client.start()
    try:
        for service in ("payment", "checkout", "catalog", "payment", "checkout"):
            time.sleep(1.5)
            kill_worker(shop, service)
        time.sleep(1.5)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert answers[201] > 10, answers  # the load did place orders between the kills
    poll_until(lambda: settled(shop), 60, 0.5, "every order settled by the reconciler")

    with closing(database(shop, "checkout")) as db:
        orders = [dict(row) for row in db.execute("SELECT * FROM orders")]
    with closing(database(shop, "payment")) as db:
        payments = [dict(row) for row in db.execute("SELECT * FROM payments")]
    with closing(database(shop, "catalog")) as db:
        held = {row["reference"] for row in db.execute("SELECT reference FROM reservations WHERE status = 'reserved'")}

    statuses = Counter(order["status"] for order in orders)
    assert set(statuses) <= {"paid", "declined", "rejected", "failed"}, statuses
    by_order = {payment["order_id"]: payment for payment in payments}
    paid = {order["id"] for order in orders if order["status"] == "paid"}
    assert {p["status"] for p in payments} <= {"captured", "declined"}  # nothing left pending at payment
    assert {o for o, p in by_order.items() if p["status"] == "captured"} == paid  # one capture per paid order only
    assert set(by_order) <= {order["id"] for order in orders}  # no payment without an order
    assert held == paid  # only paid orders hold a reservation

    taken: Counter[int] = Counter()
    for order in orders:
        if order["status"] == "paid":
            for item in json.loads(order["items"]):
                taken[item["product_id"]] += item["quantity"]
    now = stock(shop)
    assert {p: initial[p] - taken[p] for p in PRODUCTS} == {p: now[p] for p in PRODUCTS}

    # The repairs are visible: logged and counted.
    reconciled = [line for line in shop.log_lines() if line.get("message") == "order_reconciled"]
    metrics = requests.get(shop.url("checkout", "/metrics"), timeout=5).text
    assert "orders_reconciled_total" in metrics
    print(f"answers {dict(answers)}; orders {dict(statuses)}; reconciled {len(reconciled)}")
    # A service dying is a 503 or 504 for its callers, never an unexplained 500.
    assert shop.logs(message="unhandled_exception") == []
    assert answers[500] == 0, answers
