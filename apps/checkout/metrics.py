"""checkout's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ORDER_OUTCOMES = ("paid", "declined", "rejected", "failed")
ORDERS = Counter("orders_total", "Orders placed, by outcome: paid, declined, rejected or failed.", ["status"])
for _status in ORDER_OUTCOMES:
    ORDERS.labels(_status)

RECONCILED = Counter(
    "orders_reconciled_total",
    "Orders the reconciler brought to a final state after their request died (paid, declined, failed), or whose "
    "stock it gave back (stock_released).",
    ["outcome"],
)
for _outcome in ("paid", "declined", "failed", "stock_released"):
    RECONCILED.labels(_outcome)

DEPENDENCY_CALLS = Histogram(
    "http_client_request_duration_seconds",
    "Time checkout waited on a call to a dependency, by the route being served (method, route), the dependency, "
    "and its status code, or timeout / unreachable / cut_off (its answer broke off midway) when it gave none.",
    ["service", "method", "route", "dependency", "status_code"],
    unit="seconds",
)
