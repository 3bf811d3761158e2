"""payment: card checks, test cards, one payment per order, the gateway_errors fault."""

from __future__ import annotations

import uuid

import pytest

from conftest import bearer
from shop import DECLINING_CARD, GOOD_CARD


@pytest.fixture
def app(make_app):
    return make_app("payment", GATEWAY_LATENCY_MS=1)


def pay(client, headers, *, card=GOOD_CARD, amount=19.99, order_id=None, currency="USD"):
    body = {"order_id": order_id or uuid.uuid4().hex, "amount": amount, "currency": currency, "card": card}
    return client.post("/payments", json=body, headers=headers)


def test_the_approving_test_card_is_captured(client, service_headers):
    response = pay(client, service_headers)
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "captured" and body["payment_id"].startswith("pay_")
    assert body["card"] == {"brand": "visa", "last4": "4242"} and body["amount"] == 19.99


def test_the_declining_test_card_is_declined_with_a_reason(client, service_headers):
    response = pay(client, service_headers, card=DECLINING_CARD)
    assert response.status_code == 402
    assert response.json["status"] == "declined" and response.json["reason"] == "card_declined"


@pytest.mark.parametrize(
    ("card", "field", "message"),
    [
        ({**GOOD_CARD, "number": "4242424242424241"}, "card.number", "Luhn"),
        ({**GOOD_CARD, "number": "4242"}, "card.number", "12-19 digits"),
        ({**GOOD_CARD, "expiry": "01/20"}, "card.expiry", "expired"),
        ({**GOOD_CARD, "expiry": "13/30"}, "card.expiry", "MM/YY"),
        ({**GOOD_CARD, "cvc": "12"}, "card.cvc", "3 or 4 digits"),
    ],
)
def test_invalid_cards_are_400_naming_the_field(client, service_headers, card, field, message):
    response = pay(client, service_headers, card=card)
    assert response.status_code == 400
    assert [e["field"] for e in response.json["errors"]] == [field]
    assert message in response.json["errors"][0]["message"]


@pytest.mark.parametrize(
    ("amount", "currency"), [(0, "USD"), (10.001, "USD"), (1e9, "USD"), (True, "USD"), ("10", "USD"), (10, "XXX")]
)
def test_bad_amounts_and_currencies_are_400(client, service_headers, amount, currency):
    assert pay(client, service_headers, amount=amount, currency=currency).status_code == 400


def test_paying_an_order_twice_charges_once(client, service_headers):
    first = pay(client, service_headers, order_id="order-1")
    again = pay(client, service_headers, order_id="order-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json["payment_id"] == first.json["payment_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert pay(client, service_headers, order_id="order-1", amount=5.00).status_code == 409


def test_only_the_last_four_digits_are_stored(app, client, service_headers, tmp_path):
    assert pay(client, service_headers).status_code == 201
    stored = b"".join(path.read_bytes() for path in (tmp_path / "payment").glob("payment.db*"))
    assert b"4242424242424242" not in stored and b"4242" in stored


def test_payments_need_a_token(client):
    assert pay(client, {}).status_code == 401


def test_customers_cannot_pay_directly(client, headers):
    """Payments are checkout's internal operation: a customer's token is refused, whatever the order."""
    response = pay(client, headers, amount=999_999.99, order_id="made-up")
    assert response.status_code == 403 and response.content_type == "application/problem+json"


def test_a_payment_belongs_to_the_customer_checkout_acted_for(client, token_for):
    alice = bearer(token_for("checkout", ("service",), customer="alice"))
    bob = bearer(token_for("checkout", ("service",), customer="bob"))
    paid = pay(client, alice, order_id="order-of-alice")
    assert paid.status_code == 201
    # Bob's request for the same order reveals nothing of Alice's payment and charges nothing.
    refused = pay(client, bob, order_id="order-of-alice")
    assert refused.status_code == 409
    assert paid.json["payment_id"] not in refused.text and "4242" not in refused.text
    assert pay(client, alice, order_id="order-of-alice").json["payment_id"] == paid.json["payment_id"]
