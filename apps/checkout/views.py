"""POST /orders (one trace across auth, catalog and payment), GET /orders, GET /orders/<id>."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request
from opentelemetry import trace

from shoplib.api import Paging, operation
from shoplib.app import extension
from shoplib.errors import PROBLEM_CONTENT_TYPE, Problem, ValidationFailed
from shoplib.order_lines import Line
from shoplib.security import bearer_token, service_token

from .clients import Auth, Downstream, failed, problem_from
from .metrics import ORDERS
from .orders import OrderStore
from .schemas import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY,
    ORDER_ID,
    CardEntry,
    Order,
    OrderPage,
    OrderPath,
    OrderRequest,
    PaidOrder,
)

bp = Blueprint("checkout", __name__)
_log = logging.getLogger("checkout")
_tracer = trace.get_tracer(__name__)

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)
_ORDER_ID = re.compile(ORDER_ID)


@dataclass(frozen=True)
class Dependencies:
    auth: Auth
    catalog: Downstream
    payment: Downstream


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


def _request_hash(lines: list[Line], card: CardEntry) -> str:
    """Identifies the order's content, the whole card number included (another card with the same last 4 and
    expiry is another order), through a digest keyed with the shop's secret: the number can't be recovered from
    the stored hash by trying every card number."""
    key = hashlib.sha256(b"shoplab idempotency\0" + current_app.config["JWT_SECRET"].encode()).digest()
    card_digest = hmac.new(key, card.digits.encode(), hashlib.sha256).hexdigest()
    canonical = json.dumps([[line.product_id, line.quantity] for line in lines] + [card_digest, card.expiry])
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


def record_outcome(
    order_id: str,
    status: str,
    http_status: int,
    body: dict[str, Any],
    payment_id: str | None = None,
    *,
    stock_to_release: bool = False,
) -> None:
    """Record a final outcome (what any replay of the key returns); `stock_to_release`: the order's stock is still
    held and the reconciler must give it back."""
    with _step("persist order", **{"order.id": order_id, "order.status": status}):
        _orders().finish(order_id, status, http_status, body, payment_id, stock_to_release=stock_to_release)
    ORDERS.labels(status).inc()
    _log.info("order_" + status, extra={"order_id": order_id, "status": http_status})


def _settle(
    order_id: str,
    status: str,
    http_status: int,
    body: dict[str, Any],
    payment_id: str | None = None,
    *,
    stock_to_release: bool = False,
) -> Any:
    """Record a final outcome and answer with it."""
    record_outcome(order_id, status, http_status, body, payment_id, stock_to_release=stock_to_release)
    if http_status >= 400:
        return Response(json.dumps(body), status=http_status, content_type=PROBLEM_CONTENT_TYPE)
    return body, http_status


def record_failure(order_id: str, reason: str, *, stock_to_release: bool) -> None:
    """No outcome was reached (a dependency failed): the key may be retried."""
    _orders().mark_failed(order_id, stock_to_release=stock_to_release)
    ORDERS.labels("failed").inc()
    _log.error("order_failed", extra={"order_id": order_id, "reason": reason})


def _fail(order_id: str, problem: Problem, *, stock_to_release: bool) -> Problem:
    record_failure(order_id, problem.detail, stock_to_release=stock_to_release)
    return problem


def release_stock(order_id: str, bearer: str) -> bool:
    """Give back whatever stock the order holds, by the reference it reserved with (its id), so it works when the
    reservation's id never came back. True when nothing is held any more."""
    with _step("release stock", **{"order.id": order_id}):
        try:
            response = _deps().catalog.call("DELETE", f"/reservations/by-reference/{order_id}", bearer=bearer)
            released = response.status_code in (200, 404)  # 404: it never reserved anything
        except Problem:
            released = False
    if not released:  # the reconciler tries again; the log line says why the stock is still held
        _log.error("stock_release_failed", extra={"order_id": order_id})
    return released


def paid_body(order: dict[str, Any], payment_id: str) -> dict[str, Any]:
    """The answer to a paid order: `order` has its reservation's items, total_cents and currency."""
    return {
        "order_id": order["id"],
        "status": "paid",
        "total": order["total_cents"] / 100,
        "currency": order["currency"],
        "items": [_item_json(item) for item in order["items"]],
        "payment_id": payment_id,
    }


def declined_problem(order_id: str, reason: str, *, released: bool) -> Problem:
    stock = "the stock is released" if released else "the stock is being released"
    return Problem(
        402,
        "Payment declined",
        f"The card was declined ({reason}); no money was taken and {stock}.",
        order_id=order_id,
        order_status="declined",
        reason=reason,
    )


@bp.post("/orders")
@operation(
    "Place an order: stock reserved, card charged, one answer per Idempotency-Key (replays say so in the "
    "Idempotent-Replayed header); 402 when the card is declined",
    body=OrderRequest,
    headers=(IDEMPOTENCY_HEADER,),
    responses={201: PaidOrder},
    secured=True,
)
def place_order(body: OrderRequest) -> Any:
    key = _idempotency_key()
    bearer = bearer_token()
    with _step("verify customer"):
        principal = _deps().auth.verify(bearer)
    lines, card = body.items, body.card
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
    # Catalog and payment take reservations and payments only from checkout, acting for this customer.
    return _process(claim.order["id"], lines, card, service_token("checkout", principal.sub))


def _process(order_id: str, lines: list[Line], card: CardEntry, bearer: str) -> Any:
    trace.get_current_span().set_attribute("order.id", order_id)
    deps = _deps()
    with _step("reserve stock", **{"order.id": order_id, "order.lines": len(lines)}):
        try:
            response = deps.catalog.call(
                "POST",
                "/reservations",
                bearer=bearer,
                json={"reference": order_id, "items": [line.model_dump() for line in lines]},
            )
        except Problem as problem:
            # Catalog may have reserved all the same (a timeout, or it died before answering): the reconciler
            # releases whatever the order holds.
            raise _fail(order_id, problem, stock_to_release=True) from None
    if response.status_code in (400, 409):
        return _settle(order_id, "rejected", response.status_code, problem_from(response).body())
    if response.status_code not in (200, 201):
        raise _fail(order_id, failed(deps.catalog, response), stock_to_release=True)
    reservation = response.json()
    _orders().record_reservation(order_id, reservation)
    order = {
        "id": order_id,
        "items": reservation["items"],
        "total_cents": reservation["total_cents"],
        "currency": reservation["currency"],
    }

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
                    "card": card.model_dump(),
                },
            )
        except Problem as problem:
            # A timeout may still capture, and so may a payment that died after capturing (the connection drops):
            # the stock stays until the reconciler has asked payment.
            raise _fail(order_id, problem, stock_to_release=True) from None
    if response.status_code == 201:
        payment = response.json()
        return _settle(order_id, "paid", 201, paid_body(order, payment["payment_id"]), payment["payment_id"])
    if response.status_code == 402:
        released = release_stock(order_id, bearer)
        declined = declined_problem(order_id, response.json().get("reason", "declined"), released=released)
        return _settle(order_id, "declined", 402, declined.body(), stock_to_release=not released)
    if response.status_code == 400:  # the card was refused before any charge
        released = release_stock(order_id, bearer)
        return _settle(order_id, "rejected", 400, problem_from(response).body(), stock_to_release=not released)
    # 502 is the gateway failing: no charge. Any other answer (409 payment in progress, a 500) leaves the charge
    # unknown: the stock stays until the reconciler has asked payment.
    released = response.status_code == 502 and release_stock(order_id, bearer)
    raise _fail(order_id, failed(deps.payment, response), stock_to_release=not released)


@bp.get("/orders")
@operation("The customer's orders, newest first", query=Paging, responses={200: OrderPage}, secured=True)
def list_orders(query: Paging) -> Any:
    principal = _deps().auth.verify(bearer_token())
    orders, total = _orders().list_for_user(principal.sub, query.limit, query.offset)
    items = [order_json(order) for order in orders]
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/orders/<order_id>")
@operation("One of the customer's orders", path=OrderPath, responses={200: Order}, secured=True)
def get_order(order_id: str) -> Any:
    principal = _deps().auth.verify(bearer_token())
    order = _orders().get(order_id) if _ORDER_ID.fullmatch(order_id) else None
    # Someone else's order is "not found" too: its existence is not the caller's business.
    if order is None or order["user_id"] != principal.sub:
        raise Problem(404, "Not found", f"You have no order {order_id}.")
    return order_json(order)
