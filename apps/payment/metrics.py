"""payment's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

PAYMENTS = Counter("payments_total", "Payments by outcome: captured, declined or error.", ["status"])
PAYMENT_ERRORS = Counter(
    "payment_errors_total", "Payments that failed for a technical reason (not declines), by reason.", ["reason"]
)
CAPTURED_AMOUNT = Counter("payments_captured_amount_total", "Money captured, in major currency units.", ["currency"])
for _status in ("captured", "declined", "error"):
    PAYMENTS.labels(_status)
PAYMENT_ERRORS.labels("gateway_error")
VOIDED = Counter(
    "payments_voided_total",
    "Pending payments a restart found left by a crash mid-payment: never authorized, removed so the order can be paid.",
)
