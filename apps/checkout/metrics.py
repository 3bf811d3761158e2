"""checkout's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

ORDER_OUTCOMES = ("paid", "declined", "rejected", "failed")
ORDERS = Counter("orders_total", "Orders placed, by outcome: paid, declined, rejected or failed.", ["status"])
for _status in ORDER_OUTCOMES:
    ORDERS.labels(_status)
