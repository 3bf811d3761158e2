"""POST /payments (checkout's, for a customer: internal): validate, claim the order's payment, authorize at the
gateway, record the outcome."""

from __future__ import annotations

import logging
import re
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Blueprint, request

from shoplib.app import extension
from shoplib.errors import Problem, ValidationFailed
from shoplib.releases import setting as release_setting
from shoplib.security import acting_for, require_service
from shoplib.validation import Fields, json_body

from . import cards
from .gateway import Gateway
from .metrics import CAPTURED_AMOUNT, PAYMENT_ERRORS, PAYMENTS, VOIDED
from .releases import CLIENT_FAILURE_RATE
from .store import PaymentStore

bp = Blueprint("payment", __name__)
_log = logging.getLogger("payment")

CURRENCIES = ("USD", "EUR", "GBP")
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]+")
_CARD_DIGITS = re.compile(r"[0-9][0-9 -]{10,22}[0-9]")
_CVC = re.compile(r"[0-9]{3,4}")


def _store() -> PaymentStore:
    return extension("payment.store", PaymentStore)


def _gateway() -> Gateway:
    return extension("payment.gateway", Gateway)


def _read_payment(body: dict[str, Any]) -> tuple[str, int, str, str, str]:
    """(order_id, amount_cents, currency, card digits, cvc), or a 400 problem listing every bad field."""
    fields = Fields()
    order_id = fields.string(body, "order_id", max_length=64, pattern=_ORDER_ID, hint="letters, digits, _ and -")
    amount = fields.number(body, "amount", minimum=0.01, maximum=1_000_000)
    amount_cents = 0
    if amount is not None:
        cents = Decimal(str(amount)) * 100
        if cents != cents.to_integral_value():
            fields.fail("amount", "must have at most two decimal places")
        amount_cents = int(cents)
    currency = fields.string(body, "currency", min_length=3, max_length=3)
    if currency is not None and currency not in CURRENCIES:
        fields.fail("currency", f"must be one of {', '.join(CURRENCIES)}")
    digits = cvc = ""
    card = fields.object(body, "card")
    if card is not None:
        number = fields.string(card, "number", at="card", max_length=23, pattern=_CARD_DIGITS, hint="12-19 digits")
        expiry = fields.string(card, "expiry", at="card", max_length=5)
        cvc = fields.string(card, "cvc", at="card", max_length=4, pattern=_CVC, hint="3 or 4 digits") or ""
        if number is not None:
            digits = cards.normalize_number(number)
            if not 12 <= len(digits) <= 19 or not digits.isdigit():
                fields.fail("card.number", "must be 12-19 digits")
            elif not cards.luhn_valid(digits):
                fields.fail("card.number", "is not a valid card number (Luhn check failed)")
        if expiry is not None and (problem := cards.expiry_problem(expiry, date.today())):
            fields.fail("card.expiry", problem)
    fields.raise_if_any()
    return order_id or "", amount_cents, currency or "", digits, cvc


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
def find_payment() -> Any:
    """The payment of `?order_id=`: how checkout settles an order whose request died (pending, captured or
    declined). Another customer's payment is as absent as none."""
    order_id = request.args.get("order_id", "")
    if not _ORDER_ID.fullmatch(order_id) or len(order_id) > 64:
        raise ValidationFailed([{"field": "order_id", "message": "1-64 letters, digits, _ and -"}])
    payment = _store().get_by_order(order_id)
    if payment is None or payment["owner"] not in (acting_for(), None):
        raise Problem(404, "Not found", f"Order {order_id} has no payment.")
    return _payment_json(payment)


@bp.post("/payments")
@require_service("checkout")
def create_payment() -> Any:
    order_id, amount_cents, currency, digits, _cvc = _read_payment(json_body())
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
