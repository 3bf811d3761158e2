"""catalog: browsing, and stock reservations that are atomic and never go negative."""

from __future__ import annotations

import threading

import pytest

from conftest import bearer


@pytest.fixture
def app(make_app):
    return make_app("catalog", SEED_PRODUCTS=60)


def set_stock(app, product_id, stock):
    app.extensions["catalog.store"].db.execute(
        "test.set_stock", "UPDATE products SET stock = ? WHERE id = ?", (stock, product_id)
    )


def reserve(client, headers, items, reference="order-1"):
    return client.post("/reservations", json={"reference": reference, "items": items}, headers=headers)


def test_the_catalog_is_seeded_and_paginated(client):
    first = client.get("/products?limit=5").json
    second = client.get("/products?limit=5&offset=5").json
    assert first["total"] == 60 and len(first["items"]) == 5
    assert {p["id"] for p in first["items"]}.isdisjoint(p["id"] for p in second["items"])
    product = first["items"][0]
    assert {"id", "name", "price", "stock", "category", "sku"} <= set(product)
    assert product["price"] > 0 and product["stock"] > 0


def test_the_real_default_catalog_has_hundreds_of_products(client_for):
    assert client_for("catalog").get("/products").json["total"] >= 500


def test_search_matches_names_case_insensitively_and_treats_wildcards_literally(client):
    name = client.get("/products/1").json["name"]
    word = name.split()[-1].upper()
    found = client.get(f"/products?q={word}&limit=100").json
    assert found["total"] >= 1 and all(word.lower() in p["name"].lower() for p in found["items"])
    assert client.get("/products?q=%25").json["total"] == 0  # '%' is not a wildcard


def test_a_missing_product_is_a_404_problem(client):
    for product_id in (999_999, 2**70):
        response = client.get(f"/products/{product_id}")
        assert response.status_code == 404 and response.content_type == "application/problem+json"


def test_a_reservation_takes_stock_and_prices_the_lines(client, service_headers):
    before = client.get("/products/3").json
    response = reserve(client, service_headers, [{"product_id": 3, "quantity": 2}])
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "reserved" and body["total"] == pytest.approx(2 * before["price"])
    assert client.get("/products/3").json["stock"] == before["stock"] - 2


def test_a_reservation_is_all_or_nothing(app, client, service_headers):
    set_stock(app, 2, 1)
    stock_of_1 = client.get("/products/1").json["stock"]
    response = reserve(client, service_headers, [{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 5}])
    assert response.status_code == 409
    assert response.json["unavailable"] == [{"product_id": 2, "requested": 5, "available": 1}]
    assert client.get("/products/1").json["stock"] == stock_of_1  # the first line was rolled back


def test_an_unknown_product_names_the_line(client, service_headers):
    response = reserve(
        client, service_headers, [{"product_id": 1, "quantity": 1}, {"product_id": 999_999, "quantity": 1}]
    )
    assert response.status_code == 400
    assert response.json["errors"] == [{"field": "items[1].product_id", "message": "no such product"}]


def test_the_same_reference_reserves_once_and_release_gives_stock_back_once(client, service_headers):
    before = client.get("/products/4").json["stock"]
    first = reserve(client, service_headers, [{"product_id": 4, "quantity": 3}], reference="order-x")
    again = reserve(client, service_headers, [{"product_id": 4, "quantity": 3}], reference="order-x")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["reservation_id"] == first.json["reservation_id"]
    assert client.get("/products/4").json["stock"] == before - 3
    rid = first.json["reservation_id"]
    for _ in range(2):
        released = client.delete(f"/reservations/{rid}", headers=service_headers)
        assert released.status_code == 200 and released.json["status"] == "released"
    assert client.get("/products/4").json["stock"] == before
    # A released reservation can be taken again (checkout retrying after a failed payment).
    assert reserve(client, service_headers, [{"product_id": 4, "quantity": 3}], reference="order-x").status_code == 201
    assert client.get("/products/4").json["stock"] == before - 3


def test_concurrent_reservations_never_oversell(app, service_headers):
    set_stock(app, 5, 7)
    results = []

    def buy(n):
        client = app.test_client()
        results.append(
            reserve(client, service_headers, [{"product_id": 5, "quantity": 1}], reference=f"c-{n}").status_code
        )

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] * 7 + [409] * 13
    assert app.test_client().get("/products/5").json["stock"] == 0


def test_reservations_need_a_token(client):
    assert reserve(client, {}, [{"product_id": 1, "quantity": 1}]).status_code == 401
    assert client.delete("/reservations/" + "0" * 32).status_code == 401


def test_releasing_an_unknown_reservation_is_404(client, service_headers):
    for rid in ("0" * 32, "not-an-id"):
        assert client.delete(f"/reservations/{rid}", headers=service_headers).status_code == 404


def test_customers_cannot_reserve_or_release_stock(client, headers, service_headers):
    """Reservations are checkout's internal operation: a customer's own token is refused before anything moves."""
    before = client.get("/products/6").json["stock"]
    refused = reserve(client, headers, [{"product_id": 6, "quantity": 100}], reference="no-order")
    assert refused.status_code == 403 and refused.content_type == "application/problem+json"
    assert "checkout" in refused.json["detail"]
    rid = reserve(client, service_headers, [{"product_id": 6, "quantity": 1}], reference="order-6").json[
        "reservation_id"
    ]
    assert client.delete(f"/reservations/{rid}", headers=headers).status_code == 403
    assert client.get("/products/6").json["stock"] == before - 1  # still held


def test_other_services_and_tokens_without_a_customer_are_refused(client, token_for):
    for token in (
        token_for("payment", ("service",), customer="alice"),  # a service, but not checkout
        token_for("checkout", ("service",)),  # checkout, acting for no one
        token_for("checkout", ("customer",), customer="alice"),  # a customer named checkout
    ):
        response = reserve(client, bearer(token), [{"product_id": 1, "quantity": 1}], reference="x-1")
        assert response.status_code == 403, token


def test_a_reservation_belongs_to_the_customer_checkout_acted_for(client, token_for):
    alice = bearer(token_for("checkout", ("service",), customer="alice"))
    bob = bearer(token_for("checkout", ("service",), customer="bob"))
    before = client.get("/products/8").json["stock"]
    mine = reserve(client, alice, [{"product_id": 8, "quantity": 2}], reference="order-alice")
    assert mine.status_code == 201 and mine.json["owner"] == "alice"
    # Bob can neither see it through its reference nor put its stock back.
    taken = reserve(client, bob, [{"product_id": 8, "quantity": 1}], reference="order-alice")
    assert taken.status_code == 409 and "reservation_id" not in taken.json
    assert client.delete(f"/reservations/{mine.json['reservation_id']}", headers=bob).status_code == 404
    assert client.get("/products/8").json["stock"] == before - 2
    assert client.delete(f"/reservations/{mine.json['reservation_id']}", headers=alice).status_code == 200
    assert client.get("/products/8").json["stock"] == before
