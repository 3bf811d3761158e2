"""Every order reaches a final state without relying on its client: a pass at start-up, then every
RECONCILE_INTERVAL_S.

An order's request can die anywhere (checkout killed, a dependency killed or too slow). What it leaves:
- pending, untouched for ORDER_STALE_AFTER_S (or from before this process started): payment is asked for the
  order's payment. Captured: the order is paid (its stock stays taken). Declined: its stock is released and it is
  declined. None: its stock is released (by reference: the reservation's id may never have come back) and it is
  failed, so the same key may be retried. Pending at payment: asked again next pass.
- failed with stock possibly held (a timeout, a dependency that died mid-call): the same, since a payment that
  timed out may have been captured after all.
- declined or rejected with stock not yet released (catalog was away): released.
Each action is idempotent (payment keeps one payment per order, catalog releases a reservation once), logged
(`order_reconciled`) and counted (orders_reconciled_total). An order the reconciler works on is taken over as a
retry of its key would take it, so the client and the reconciler never act on it at once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from opentelemetry import trace

from shoplib.errors import Problem
from shoplib.security import SERVICE_ROLE, SERVICE_TOKEN_TTL_S, sign_token

from .metrics import RECONCILED
from .orders import OrderStore
from .views import declined_problem, paid_body, record_failure, record_outcome, release_stock

_log = logging.getLogger("checkout.reconciler")
_tracer = trace.get_tracer(__name__)
BATCH = 100  # orders per pass at most: a pass stays short, the next one goes on


class Reconciler:
    def __init__(self, app: Flask, orders: OrderStore, interval_s: float) -> None:
        self.app = app
        self.orders = orders
        self.interval_s = interval_s
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="order-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # At start-up, every pending order is from a process that is gone: nothing can be working on it.
        stale_before = self.started_at
        while not self._stop.is_set():
            try:
                self.run_once(stale_before)
            except Exception:  # noqa: BLE001 - the next pass tries again; one bad pass must not end the thread
                _log.exception("reconcile_pass_failed")
            if self._stop.wait(self.interval_s):
                return
            stale_before = datetime.now(UTC) - self.orders.stale_after

    def run_once(self, stale_before: datetime | None = None) -> dict[str, int]:
        """One pass; what it did, by outcome. `stale_before`: pending orders older than this are abandoned."""
        done: dict[str, int] = {}
        with self.app.app_context():
            for order in self.orders.unsettled(stale_before or datetime.now(UTC) - self.orders.stale_after, BATCH):
                outcome = self._settle(order)
                if outcome is not None:
                    done[outcome] = done.get(outcome, 0) + 1
        return done

    def _settle(self, order: dict[str, Any]) -> str | None:
        with _tracer.start_as_current_span(
            "reconcile order", attributes={"order.id": order["id"], "order.status": order["status"]}
        ) as span:
            outcome = self._decide(order)
            span.set_attribute("reconcile.outcome", outcome or "later")
        if outcome is not None:
            RECONCILED.labels(outcome).inc()
            _log.info("order_reconciled", extra={"order_id": order["id"], "was": order["status"], "outcome": outcome})
        return outcome

    def _decide(self, order: dict[str, Any]) -> str | None:
        """What to do with one order: the outcome it was brought to, or None to look again next pass."""
        bearer = self._token(order["user_id"])
        if order["status"] in ("declined", "rejected"):  # final: no retry can race us; give the stock back
            if not release_stock(order["id"], bearer):
                return None
            self.orders.stock_released(order["id"], order["status"])
            return "stock_released"
        if not self.orders.take_over(order):
            return None  # a retry of its key took it first
        payment = self._payment_of(order, bearer)
        if payment is None or payment["status"] == "pending":  # payment away, or still paying: hand it back
            self._hand_back(order)
            return None
        settled = self.orders.get(order["id"])
        assert settled is not None
        if payment["status"] == "captured":
            settled["items"] = _items(settled)
            record_outcome(order["id"], "paid", 201, paid_body(settled, payment["payment_id"]), payment["payment_id"])
            return "paid"
        released = release_stock(order["id"], bearer)
        if payment["status"] == "declined":
            problem = declined_problem(order["id"], payment.get("reason") or "declined", released=released)
            record_outcome(order["id"], "declined", 402, problem.body(), stock_to_release=not released)
            return "declined"
        record_failure(order["id"], "abandoned mid-order; nothing was charged", stock_to_release=not released)
        return "failed" if released else None

    def _payment_of(self, order: dict[str, Any], bearer: str) -> dict[str, Any] | None:
        """The order's payment as payment has it; {"status": "none"} when there is none; None when payment can't
        say now."""
        deps = self.app.extensions["checkout.deps"]
        try:
            response = deps.payment.call("GET", f"/payments?order_id={order['id']}", bearer=bearer)
        except Problem:
            return None
        if response.status_code == 404:
            return {"status": "none"}
        if response.status_code != 200:
            return None
        payment: dict[str, Any] = response.json()
        return payment

    def _hand_back(self, order: dict[str, Any]) -> None:
        """Leave the order as it was found (failed, or pending to be looked at again)."""
        if order["status"] == "failed":
            self.orders.mark_failed(order["id"], stock_to_release=bool(order["stock_to_release"]))

    def _token(self, customer: str) -> str:
        return sign_token(self.app.config, "checkout", (SERVICE_ROLE,), SERVICE_TOKEN_TTL_S, customer=customer)


def _items(order: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(order["items"])
    return items


def start(app: Flask, orders: OrderStore, interval_s: float) -> Callable[[], None]:
    """The reconciler of `app`, running; returns how to stop it."""
    reconciler = Reconciler(app, orders, interval_s)
    app.extensions["checkout.reconciler"] = reconciler
    reconciler.start()
    return reconciler.stop
