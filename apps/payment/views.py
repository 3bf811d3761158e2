"""POST /payments (checkout's, for a customer: internal): validate, claim the order's payment, authorize at the
gateway, record the outcome."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from shoplib.api import operation
from shoplib.app import extension
from shoplib.errors import Problem
from shoplib.releases import setting as release_setting
from shoplib.security import acting_for, require_service

from . import cards
from .gateway import Gateway
from .metrics import CAPTURED_AMOUNT, PAYMENT_ERRORS, PAYMENTS, VOIDED
from .releases import CLIENT_FAILURE_RATE
from .schemas import Payment, PaymentLookup, PaymentRequest
from .store import PaymentStore

bp = Blueprint("payment", __name__)
_log = logging.getLogger("payment")


def _store() -> PaymentStore:
    return extension("payment.store", PaymentStore)


def _gateway() -> Gateway:
    return extension("payment.gateway", Gateway)


def recover(store: PaymentStore) -> None:
    """At start-up, before serving: what a crash left pending is voided, logged and counted."""
    for payment in store.void_unfinished():
        VOIDED.inc()
        _log.warning("payment_voided", extra={"order_id": payment["order_id"], "payment_id": payment["id"]})


def _payment_json(payment: dict[str, Any]) -> dict[str, Any]:
    body = {
        "payment_id": payment["id"],
        "order_id": payment["order_id"],
        "status": payment["status"],
        "amount": payment["amount_cents"] / 100,
        "currency": payment["currency"],
        "card": {"brand": payment["card_brand"], "last4": payment["card_last4"]},
    }
    if payment["status"] == "declined":
        body["reason"] = payment["decline_reason"]
    return body


def _response(payment: dict[str, Any], replayed: bool) -> Any:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return _payment_json(payment), 201 if payment["status"] == "captured" else 402, headers


@bp.get("/payments")
@require_service("checkout")
@operation(
    "An order's payment (checkout's, for a customer)", query=PaymentLookup, responses={200: Payment}, secured=True
)
def find_payment(query: PaymentLookup) -> Any:
    """The payment of `?order_id=`: how checkout settles an order whose request died (pending, captured or
    declined). Another customer's payment is as absent as none."""
    order_id = query.order_id
    payment = _store().get_by_order(order_id)
    if payment is None or payment["owner"] not in (acting_for(), None):
        raise Problem(404, "Not found", f"Order {order_id} has no payment.")
    return _payment_json(payment)


@bp.post("/payments")
@require_service("checkout")
@operation(
    "Pay for an order (checkout's, for a customer): 201 captured, 402 declined; idempotent per order",
    body=PaymentRequest,
    responses={201: Payment, 402: Payment},
    secured=True,
)
def create_payment(body: PaymentRequest) -> Any:
    order_id, amount_cents, currency, digits = body.order_id, body.amount_cents, body.currency, body.card.number
    brand, last4 = cards.brand(digits), digits[-4:]
    owner = acting_for()
    payment, claimed = _store().claim(order_id, amount_cents, currency, brand, last4, owner=owner)
    if not claimed:
        if payment["owner"] not in (owner, None):  # None: paid before payments had owners
            # Nothing of another customer's payment is shown, not even that it exists.
            raise Problem(409, "Conflict", f"Order {order_id} cannot be paid with this request.")
        if (payment["amount_cents"], payment["currency"]) != (amount_cents, currency):
            raise Problem(409, "Conflict", f"Order {order_id} already has a payment for a different amount.")
        if payment["status"] == "pending":
            raise Problem(
                409,
                "Payment in progress",
                f"Order {order_id} is being paid right now; retry shortly.",
                headers={"Retry-After": "1"},
            )
        return _response(payment, replayed=True)
    log_fields = {
        "order_id": order_id,
        "payment_id": payment["id"],
        "card_brand": brand,
        "card_last4": last4,
        "amount": amount_cents / 100,
        "currency": currency,
    }
    try:
        authorization = _gateway().authorize(
            digits, amount_cents, currency, client_failure_rate=release_setting(CLIENT_FAILURE_RATE, 0.0)
        )
    except Problem:
        _store().abandon(payment["id"])
        PAYMENTS.labels("error").inc()
        PAYMENT_ERRORS.labels("gateway_error").inc()
        _log.error("payment_failed", extra={**log_fields, "reason": "gateway_error"})
        raise
    if authorization.approved:
        payment = _store().finish(payment["id"], "captured", None)
        PAYMENTS.labels("captured").inc()
        CAPTURED_AMOUNT.labels(currency).inc(amount_cents / 100)
        _log.info("payment_captured", extra=log_fields)
    else:
        payment = _store().finish(payment["id"], "declined", authorization.reason)
        PAYMENTS.labels("declined").inc()
        _log.info("payment_declined", extra={**log_fields, "reason": authorization.reason})
    return _response(payment, replayed=False)
