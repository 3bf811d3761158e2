"""Bad input anywhere is a 4xx problem naming what is wrong; never a 5xx, never a traceback."""

from __future__ import annotations

import http.client
import json
import re
import socket
import uuid

import pytest
import requests

from shop import GOOD_CARD, poll_until
from shoplib.config import load as load_settings
from shoplib.security import SERVICE_ROLE, sign_token

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


@pytest.fixture(scope="module")
def checkout_for_alice(shop):
    """checkout's own token acting for alice, signed with the native shop's secret: what catalog's reservations and
    payment's payments take (a customer's token is a 403 there)."""
    return sign_token(load_settings((), shop.supervisor.environ), "checkout", (SERVICE_ROLE,), 600, customer="alice")


@pytest.mark.parametrize(
    ("service", "method", "path", "body", "headers", "status", "field"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_input_is_a_4xx_problem(  # noqa: PLR0917
    shop, customer, checkout_for_alice, service, method, path, body, headers, status, field
):
    sent_headers = {"Content-Type": "application/json"}
    if headers in ("auth", "auth-no-key"):
        token = checkout_for_alice if service in ("catalog", "payment") else customer
        sent_headers["Authorization"] = f"Bearer {token}"
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


def _chunked_order(shop, token: str, body: bytes) -> tuple[int, str, bytes]:
    """POST /orders with `body` sent chunked (Transfer-Encoding: chunked, no Content-Length), as http.client does
    for an iterable body: (status, content type, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", shop.ports["checkout"], timeout=10)
    try:
        pieces = (body[start : start + 8192] for start in range(0, len(body), 8192))
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        connection.request("POST", "/orders", body=pieces, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_is_413_as_with_a_content_length(shop, customer):
    """Werkzeug cut a chunked body at 64 KiB and handed the view the start: an order padded with 70 KiB of
    whitespace (still valid JSON once cut) was a 201. Sent with a Content-Length the same bytes are a 413."""
    order = json.dumps({"items": [{"product_id": 3, "quantity": 1}], "card": GOOD_CARD}).encode()
    padded = order + b" " * (70 * 1024)
    status, content_type, body = _chunked_order(shop, customer, padded)
    assert (status, content_type) == (413, "application/problem+json"), body
    assert json.loads(body)["status"] == 413
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {customer}", "Idempotency-Key": "cl"}
    assert requests.post(shop.url("checkout", "/orders"), data=padded, headers=headers, timeout=10).status_code == 413
    # The control: chunked as such is fine, under the limit the same order is placed.
    status, _content_type, body = _chunked_order(shop, customer, order + b" " * 1024)
    assert status == 201, body


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is and read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


# What gunicorn refuses before the app sees it: (request, status).
GUNICORN_REJECTS = [
    pytest.param(
        b"GET /products HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431, id="100KB-header"
    ),
    pytest.param(b"GET /prod\x01ucts HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="control-character-in-request-line"),
    pytest.param(b"GET /" + b"p" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="10KB-request-line"),
    pytest.param(
        b"POST /products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        id="malformed-chunk",  # read by the app (shoplib.app), refused by gunicorn's parser
    ),
]


@pytest.mark.parametrize(("request_bytes", "status"), GUNICORN_REJECTS)
def test_what_gunicorn_refuses_is_a_problem_logged_and_counted(shop, request_bytes, status):
    """gunicorn answered these with an HTML page, in no access line and no metric."""

    def rejected() -> float:
        text = requests.get(shop.url("catalog", "/metrics"), timeout=5).text
        series = f'http_rejected_requests_total{{service="catalog",status_code="{status}"}} (\\S+)'
        match = re.search(series, text)
        return float(match[1]) if match else 0.0

    before, lines_before = rejected(), len(shop.logs(service="catalog", route="rejected", status=status))
    answer_status, headers, body = _raw(shop.ports["catalog"], request_bytes)
    assert (answer_status, headers["content-type"]) == (status, "application/problem+json"), body
    problem = json.loads(body)
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    assert rejected() == before + 1
    lines = poll_until(
        lambda: shop.logs(service="catalog", route="rejected", status=status)[lines_before:], what="the access line"
    )
    assert lines[0]["logger"] == "shop.access" and lines[0]["message"] == "request" and lines[0]["level"] == "INFO"
