"""Bad input anywhere is a 4xx problem naming what is wrong; never a 5xx, never a traceback."""

from __future__ import annotations

import json

import pytest
import requests

from shop import GOOD_CARD

ORDER = {"items": [{"product_id": 1, "quantity": 1}], "card": GOOD_CARD}
NESTED = "[" * 30_000 + "]" * 30_000

# (service, method, path, body, extra headers, expected status, a field the problem must name or None)
CASES = [
    ("auth", "POST", "/login", "not json", {}, 400, None),
    ("auth", "POST", "/login", '{"username": "alice", "password": NaN}', {}, 400, None),
    ("auth", "POST", "/login", '{"username": 1' + "0" * 5000 + ', "password": "x"}', {}, 400, None),
    ("auth", "POST", "/login", NESTED, {}, 400, None),
    ("auth", "POST", "/login", json.dumps(["alice"]), {}, 400, ""),
    ("auth", "POST", "/login", json.dumps({"username": "alice"}), {}, 400, "password"),
    ("auth", "POST", "/login", json.dumps({"username": 7, "password": "x"}), {}, 400, "username"),
    ("auth", "POST", "/login", json.dumps({"username": "a" * 10_000, "password": "x"}), {}, 400, "username"),
    ("auth", "POST", "/login", json.dumps({"username": "a", "password": "x" * 70_000}), {}, 413, None),
    ("auth", "POST", "/login", "username=alice", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
    ("auth", "GET", "/login", None, {}, 405, None),
    ("auth", "GET", "/nowhere", None, {}, 404, None),
    ("catalog", "GET", "/products?limit=abc", None, {}, 400, "limit"),
    ("catalog", "GET", "/products?limit=0", None, {}, 400, "limit"),
    ("catalog", "GET", "/products?limit=" + "9" * 40, None, {}, 400, "limit"),
    ("catalog", "GET", "/products?offset=-1", None, {}, 400, "offset"),
    ("catalog", "GET", "/products?q=" + "x" * 500, None, {}, 400, "q"),
    ("catalog", "GET", "/products/abc", None, {}, 404, None),
    ("catalog", "POST", "/reservations", json.dumps({"reference": "r", "items": "all"}), "auth", 400, "items"),
    ("catalog", "POST", "/reservations", json.dumps({"reference": "r", "items": []}), "auth", 400, "items"),
    (
        "catalog",
        "POST",
        "/reservations",
        json.dumps({"reference": "r", "items": [{"product_id": 1, "quantity": 0}]}),
        "auth",
        400,
        "items[0].quantity",
    ),
    (
        "catalog",
        "POST",
        "/reservations",
        json.dumps({"reference": "r", "items": [{"product_id": 1, "quantity": True}]}),
        "auth",
        400,
        "items[0].quantity",
    ),
    (
        "catalog",
        "POST",
        "/reservations",
        json.dumps({"reference": "r", "items": [{"product_id": 2**80, "quantity": 1}]}),
        "auth",
        400,
        "items[0].product_id",
    ),
    (
        "catalog",
        "POST",
        "/reservations",
        json.dumps({"reference": "r", "items": [{"product_id": 1, "quantity": 1}] * 2}),
        "auth",
        400,
        "items[1].product_id",
    ),
    ("catalog", "POST", "/reservations", json.dumps({"reference": "bad ref!", "items": [1]}), "auth", 400, "reference"),
    ("checkout", "POST", "/orders", json.dumps(ORDER), "auth-no-key", 400, None),
    ("checkout", "POST", "/orders", json.dumps(ORDER), {"Idempotency-Key": "k" * 500}, 400, "Idempotency-Key"),
    (
        "checkout",
        "POST",
        "/orders",
        json.dumps(ORDER),
        {"Idempotency-Key": "k", "Authorization": "Bearer x.y.z"},
        401,
        None,
    ),
    ("checkout", "POST", "/orders", json.dumps(ORDER), {"Idempotency-Key": "k"}, 401, None),
    ("checkout", "POST", "/orders", json.dumps({**ORDER, "card": "4242"}), "auth", 400, "card"),
    (
        "checkout",
        "POST",
        "/orders",
        json.dumps({**ORDER, "items": [{"product_id": "1", "quantity": 1}]}),
        "auth",
        400,
        "items[0].product_id",
    ),
    (
        "checkout",
        "POST",
        "/orders",
        json.dumps({"items": [{"product_id": 1, "quantity": 10**30}]}),
        "auth",
        400,
        "items[0].quantity",
    ),
    ("checkout", "POST", "/orders", "{", "auth", 400, None),
    ("checkout", "GET", "/orders?limit=-5", None, "auth", 400, "limit"),
    ("checkout", "GET", "/orders/not-an-order", None, "auth", 404, None),
    (
        "payment",
        "POST",
        "/payments",
        json.dumps({"order_id": "o1", "amount": "ten", "currency": "USD", "card": GOOD_CARD}),
        "auth",
        400,
        "amount",
    ),
    (
        "payment",
        "POST",
        "/payments",
        json.dumps({"order_id": "o1", "amount": 1e308 * 10, "currency": "USD", "card": GOOD_CARD}),
        "auth",
        400,
        None,
    ),
    (
        "payment",
        "POST",
        "/payments",
        json.dumps({"order_id": "o" * 500, "amount": 1, "currency": "USD", "card": GOOD_CARD}),
        "auth",
        400,
        "order_id",
    ),
    (
        "payment",
        "POST",
        "/payments",
        json.dumps({"order_id": "o1", "amount": 1, "currency": "USD", "card": {"number": ["4242"]}}),
        "auth",
        400,
        "card.number",
    ),
]


@pytest.fixture(scope="module")
def customer(shop):
    return shop.login("alice")


@pytest.mark.parametrize(
    ("service", "method", "path", "body", "headers", "status", "field"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_input_is_a_4xx_problem(shop, customer, service, method, path, body, headers, status, field):  # noqa: PLR0917
    sent_headers = {"Content-Type": "application/json"}
    if headers in ("auth", "auth-no-key"):
        sent_headers["Authorization"] = f"Bearer {customer}"
        if headers == "auth" and service == "checkout":
            sent_headers["Idempotency-Key"] = "bad-input-test"
    elif isinstance(headers, dict):
        sent_headers.update(headers)
    response = requests.request(method, shop.url(service, path), data=body, headers=sent_headers, timeout=10)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]]
    assert "Traceback" not in response.text
