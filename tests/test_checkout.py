"""checkout against the real services: orders, idempotent replays, declines that release stock."""

from __future__ import annotations

import time
import uuid

from shop import DECLINING_CARD, GOOD_CARD, poll_until


def test_an_order_is_paid_and_listed_newest_first(shop):
    token = shop.login("alice")
    stock = shop.stock(11)
    response = shop.order(token, [{"product_id": 11, "quantity": 2}])
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "paid" and order["total"] > 0 and order["payment_id"]
    assert shop.stock(11) == stock - 2
    listed = shop.session.get(shop.url("checkout", "/orders?limit=5"), headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    body = listed.json()
    assert body["items"][0]["order_id"] == order["order_id"]
    assert body["total"] > 100  # alice's seeded history is there too
    dates = [o["created_at"] for o in body["items"]]
    assert dates == sorted(dates, reverse=True)


def test_a_replay_returns_the_same_response_and_charges_once(shop):
    token = shop.login("alice")
    stock = shop.stock(12)
    key = uuid.uuid4().hex
    first = shop.order(token, [{"product_id": 12, "quantity": 1}], key=key)
    again = shop.order(token, [{"product_id": 12, "quantity": 1}], key=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert shop.stock(12) == stock - 1

    def captured() -> list[dict]:
        return shop.logs(message="payment_captured", order_id=first.json()["order_id"])

    poll_until(captured, timeout=5, what="the payment_captured line")  # stdout lines leave in 0.2 s batches
    time.sleep(0.5)  # a second capture, had there been one, is written by now
    assert len(captured()) == 1


def test_reusing_a_key_for_a_different_order_is_refused(shop):
    token = shop.login("alice")
    key = uuid.uuid4().hex
    assert shop.order(token, [{"product_id": 13, "quantity": 1}], key=key).status_code == 201
    reused = shop.order(token, [{"product_id": 13, "quantity": 2}], key=key)
    assert reused.status_code == 422 and reused.headers["Content-Type"] == "application/problem+json"


def test_the_same_key_with_another_card_is_another_order_even_with_the_same_last_four(shop):
    """The key's request hash covers the whole card number (as a keyed digest), not only last 4 and expiry."""
    token = shop.login("alice")
    key = uuid.uuid4().hex
    items = [{"product_id": 13, "quantity": 1}]
    assert shop.order(token, items, key=key).status_code == 201
    other_card = {**GOOD_CARD, "number": "5555555555594242"}  # another card: same last 4, same expiry
    assert shop.order(token, items, card=other_card, key=key).status_code == 422


def test_keys_belong_to_their_user(shop):
    key = uuid.uuid4().hex
    alice, bob = shop.login("alice"), shop.login("bob")
    first = shop.order(alice, [{"product_id": 14, "quantity": 1}], key=key)
    second = shop.order(bob, [{"product_id": 14, "quantity": 1}], key=key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["order_id"] != second.json()["order_id"]


def test_a_declined_card_is_402_and_releases_the_stock(shop):
    token = shop.login("bob")
    stock = shop.stock(15)
    response = shop.order(token, [{"product_id": 15, "quantity": 3}], card=DECLINING_CARD)
    assert response.status_code == 402
    problem = response.json()
    assert problem["reason"] == "card_declined" and problem["order_status"] == "declined"
    assert shop.stock(15) == stock
    order = shop.session.get(
        shop.url("checkout", f"/orders/{problem['order_id']}"), headers={"Authorization": f"Bearer {token}"}
    )
    assert order.json()["status"] == "declined"


def test_an_invalid_card_is_400_naming_the_field_and_releases_the_stock(shop):
    token = shop.login("bob")
    stock = shop.stock(16)
    response = shop.order(token, [{"product_id": 16, "quantity": 1}], card={**GOOD_CARD, "number": "4242424242424241"})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["card.number"]
    assert shop.stock(16) == stock


def test_an_order_for_more_than_the_stock_is_409_and_takes_nothing(shop):
    token = shop.login("alice")
    shop.set_stock(18, 2)
    stock_17 = shop.stock(17)
    response = shop.order(token, [{"product_id": 17, "quantity": 1}, {"product_id": 18, "quantity": 3}])
    assert response.status_code == 409
    assert response.json()["unavailable"] == [{"product_id": 18, "requested": 3, "available": 2}]
    assert (shop.stock(17), shop.stock(18)) == (stock_17, 2)


def test_orders_are_private_to_their_owner(shop):
    alice, bob = shop.login("alice"), shop.login("bob")
    order_id = shop.order(alice, [{"product_id": 19, "quantity": 1}]).json()["order_id"]
    url = shop.url("checkout", f"/orders/{order_id}")
    assert shop.session.get(url, headers={"Authorization": f"Bearer {alice}"}).status_code == 200
    assert shop.session.get(url, headers={"Authorization": f"Bearer {bob}"}).status_code == 404
    assert shop.session.get(url).status_code == 401
