"""POST /orders (one trace across auth, catalog and payment), GET /orders, GET /orders/<id>."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request
from opentelemetry import trace

from shoplib.app import extension
from shoplib.errors import PROBLEM_CONTENT_TYPE, Problem, ValidationFailed
from shoplib.order_lines import Line, order_lines
from shoplib.security import bearer_token
from shoplib.validation import Fields, json_body, query_int

from .clients import Auth, Downstream, failed, problem_from
from .metrics import ORDERS
from .orders import OrderStore

bp = Blueprint("checkout", __name__)
_log = logging.getLogger("checkout")
_tracer = trace.get_tracer(__name__)

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII, as HTTP header values allow
_ORDER_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Dependencies:
    auth: Auth
    catalog: Downstream
    payment: Downstream


@dataclass(frozen=True)
class Card:
    number: str
    expiry: str
    cvc: str

    @property
    def last4(self) -> str:
        return "".join(ch for ch in self.number if ch.isdigit())[-4:]


def _deps() -> Dependencies:
    return extension("checkout.deps", Dependencies)


def _orders() -> OrderStore:
    return extension("checkout.orders", OrderStore)


@contextmanager
def _step(name: str, **attributes: Any) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span


def _idempotency_key() -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise Problem(
            400,
            "Idempotency-Key required",
            "Send an Idempotency-Key header (1-128 visible ASCII characters) so a retried order is never charged "
            "twice.",
        )
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed([{"field": "Idempotency-Key", "message": "must be 1-128 visible ASCII characters"}])
    return key


def _read_order(body: dict[str, Any]) -> tuple[list[Line], Card]:
    fields = Fields()
    lines = order_lines(body, fields)
    card = fields.object(body, "card")
    number = expiry = cvc = None
    if card is not None:
        # Shape only: payment owns the card rules (Luhn, expiry) and answers 400 with the field named.
        number = fields.string(card, "number", at="card", max_length=23)
        expiry = fields.string(card, "expiry", at="card", max_length=5)
        cvc = fields.string(card, "cvc", at="card", max_length=4)
    fields.raise_if_any()
    return lines, Card(number or "", expiry or "", cvc or "")


def _request_hash(lines: list[Line], card: Card) -> str:
    """Identifies the order's content without keeping anything derived from the full card number."""
    canonical = json.dumps([[line.product_id, line.quantity] for line in lines] + [card.last4, card.expiry])
    return hashlib.sha256(canonical.encode()).hexdigest()


def _item_json(item: dict[str, Any]) -> dict[str, Any]:
    shown = {"product_id": item["product_id"], "quantity": item["quantity"]}
    if "name" in item:
        shown["name"] = item["name"]
    if "unit_price_cents" in item:
        shown["unit_price"] = item["unit_price_cents"] / 100
    return shown


def order_json(order: dict[str, Any]) -> dict[str, Any]:
    total = order["total_cents"]
    return {
        "order_id": order["id"],
        "status": order["status"],
        "total": None if total is None else total / 100,
        "currency": order["currency"],
        "items": [_item_json(item) for item in json.loads(order["items"])],
        "payment_id": order["payment_id"],
        "created_at": order["created_at"],
    }


def _replay(order: dict[str, Any]) -> Response:
    status = order["response_status"]
    return Response(
        order["response_body"],
        status=status,
        content_type=PROBLEM_CONTENT_TYPE if status >= 400 else "application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def _settle(order_id: str, status: str, http_status: int, body: dict[str, Any], payment_id: str | None = None) -> Any:
    """Record a final outcome (what any replay of the key returns) and answer with it."""
    with _step("persist order", **{"order.id": order_id, "order.status": status}):
        _orders().finish(order_id, status, http_status, body, payment_id)
    ORDERS.labels(status).inc()
    _log.info("order_" + status, extra={"order_id": order_id, "status": http_status})
    if http_status >= 400:
        return Response(json.dumps(body), status=http_status, content_type=PROBLEM_CONTENT_TYPE)
    return body, http_status


def _fail(order_id: str, problem: Problem) -> Problem:
    """No outcome was reached (a dependency failed): the key may be retried."""
    _orders().mark_failed(order_id)
    ORDERS.labels("failed").inc()
    _log.error("order_failed", extra={"order_id": order_id, "reason": problem.detail})
    return problem


def _release(reservation_id: str, bearer: str) -> None:
    with _step("release stock", **{"reservation.id": reservation_id}):
        try:
            response = _deps().catalog.call("DELETE", f"/reservations/{reservation_id}", bearer=bearer)
            ok = response.status_code == 200
        except Problem:
            ok = False
    if not ok:  # the stock stays reserved; the log line is how an operator finds it
        _log.error("stock_release_failed", extra={"reservation_id": reservation_id})


@bp.post("/orders")
def place_order() -> Any:
    key = _idempotency_key()
    bearer = bearer_token()
    with _step("verify customer"):
        principal = _deps().auth.verify(bearer)
    lines, card = _read_order(json_body())
    requested = [{"product_id": line.product_id, "quantity": line.quantity} for line in lines]
    claim = _orders().claim(principal.sub, key, _request_hash(lines, card), requested, card.last4)
    if claim.outcome == "replay":
        return _replay(claim.order)
    if claim.outcome == "conflict":
        raise Problem(422, "Idempotency-Key reused", "This Idempotency-Key was already used for a different order.")
    if claim.outcome == "busy":
        raise Problem(
            409,
            "Order in progress",
            "An order with this Idempotency-Key is being processed; retry shortly.",
            headers={"Retry-After": "1"},
        )
    return _process(claim.order["id"], lines, card, bearer)


def _process(order_id: str, lines: list[Line], card: Card, bearer: str) -> Any:
    trace.get_current_span().set_attribute("order.id", order_id)
    deps = _deps()
    with _step("reserve stock", **{"order.id": order_id, "order.lines": len(lines)}):
        try:
            response = deps.catalog.call(
                "POST",
                "/reservations",
                bearer=bearer,
                json={"reference": order_id, "items": [vars(line) for line in lines]},
            )
        except Problem as problem:
            raise _fail(order_id, problem) from None
    if response.status_code in (400, 409):
        return _settle(order_id, "rejected", response.status_code, problem_from(response).body())
    if response.status_code not in (200, 201):
        raise _fail(order_id, failed(deps.catalog, response))
    reservation = response.json()
    _orders().record_reservation(order_id, reservation)

    with _step("charge payment", **{"order.id": order_id}):
        try:
            response = deps.payment.call(
                "POST",
                "/payments",
                bearer=bearer,
                json={
                    "order_id": order_id,
                    "amount": reservation["total"],
                    "currency": reservation["currency"],
                    "card": vars(card),
                },
            )
        except Problem as problem:
            _release(reservation["reservation_id"], bearer)
            raise _fail(order_id, problem) from None
    if response.status_code == 201:
        payment = response.json()
        body = {
            "order_id": order_id,
            "status": "paid",
            "total": reservation["total"],
            "currency": reservation["currency"],
            "items": [_item_json(item) for item in reservation["items"]],
            "payment_id": payment["payment_id"],
        }
        return _settle(order_id, "paid", 201, body, payment["payment_id"])
    _release(reservation["reservation_id"], bearer)
    if response.status_code == 402:
        reason = response.json().get("reason", "declined")
        declined = Problem(
            402,
            "Payment declined",
            f"The card was declined ({reason}); no money was taken and the stock is released.",
            order_id=order_id,
            order_status="declined",
            reason=reason,
        )
        return _settle(order_id, "declined", 402, declined.body())
    if response.status_code == 400:
        return _settle(order_id, "rejected", 400, problem_from(response).body())
    raise _fail(order_id, failed(deps.payment, response))


@bp.get("/orders")
def list_orders() -> Any:
    principal = _deps().auth.verify(bearer_token())
    limit = query_int("limit", 20, 1, 100)
    offset = query_int("offset", 0, 0, 1_000_000)
    orders, total = _orders().list_for_user(principal.sub, limit, offset)
    return {"items": [order_json(order) for order in orders], "total": total, "limit": limit, "offset": offset}


@bp.get("/orders/<order_id>")
def get_order(order_id: str) -> Any:
    principal = _deps().auth.verify(bearer_token())
    order = _orders().get(order_id) if _ORDER_ID.fullmatch(order_id) else None
    # Someone else's order is "not found" too: its existence is not the caller's business.
    if order is None or order["user_id"] != principal.sub:
        raise Problem(404, "Not found", f"You have no order {order_id}.")
    return order_json(order)
