"""Faults need an admin token, take effect at runtime, show up in metrics and logs, and go away."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from contextlib import closing

import pytest
import requests

from shop import poll_until
from shoplib.services import SERVICES

pytestmark = pytest.mark.usefixtures("clean_faults")


def fault_gauge(shop, service, fault):
    text = requests.get(shop.url(service, "/metrics")).text
    match = re.search(rf'shop_fault_active\{{fault="{fault}",service="{service}"\}} (\S+)', text)
    assert match, f"no shop_fault_active series for {service}/{fault}"
    return float(match.group(1))


def timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


@pytest.mark.parametrize("service", SERVICES)
def test_fault_endpoints_need_an_admin_token(shop, admin_token, service):
    url = shop.url(service, "/admin/faults")
    customer = shop.login("alice")
    assert requests.get(url).status_code == 401
    assert requests.put(url, json={"latency": {"ms": 5}}).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {customer}"}).status_code == 403
    assert requests.delete(url, headers={"Authorization": "Bearer forged.token.here"}).status_code == 401
    state = requests.get(url, headers={"Authorization": f"Bearer {admin_token}"})
    assert state.status_code == 200
    assert {"latency", "errors"} <= set(state.json()["available"]) and state.json()["active"] == {}


def test_each_service_offers_its_own_faults(shop, admin_token):
    available = {
        s: set(
            requests.get(shop.url(s, "/admin/faults"), headers={"Authorization": f"Bearer {admin_token}"}).json()[
                "available"
            ]
        )
        for s in SERVICES
    }
    assert "gateway_errors" in available["payment"]
    assert {"db_lock", "missing_index"} <= available["checkout"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nonsense": {}}, "nonsense"),
        ({"latency": {"ms": 0}}, "latency.ms"),
        ({"latency": {"ms": 10**12}}, "latency.ms"),
        ({"latency": {"ms": "100"}}, "latency.ms"),
        ({"latency": {"ms": 100, "colour": "red"}}, "latency.colour"),
        ({"errors": {"rate": 1.5}}, "errors.rate"),
        ({"errors": {"rate": 1, "status": 200}}, "errors.status"),
        ({"latency": 5}, "latency"),
        ({}, ""),
    ],
)
def test_invalid_fault_requests_are_400_and_change_nothing(shop, admin_token, body, field):
    response = shop.set_faults("catalog", admin_token, body)
    assert response.status_code == 400, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert fault_gauge(shop, "catalog", "latency") == 0


def test_latency_slows_matching_routes_and_is_visible_while_active(shop, admin_token):
    assert shop.set_faults("catalog", admin_token, {"latency": {"ms": 400, "route": "/products"}}).status_code == 200
    slow, slow_s = timed(lambda: requests.get(shop.url("catalog", "/products/1")))
    assert slow.status_code == 200 and slow_s >= 0.4
    assert fault_gauge(shop, "catalog", "latency") == 1
    _, health_s = timed(lambda: requests.get(shop.url("catalog", "/healthz")))
    assert health_s < 0.4  # operators' endpoints are never faulted
    logged = shop.logs(message="fault_set", fault="latency")
    assert logged and logged[-1]["actor"] == "admin" and logged[-1]["service"] == "catalog"

    assert shop.clear_faults("catalog", admin_token).json()["active"] == {}
    _, fast_s = timed(lambda: requests.get(shop.url("catalog", "/products/1")))
    assert fast_s < 0.4 and fault_gauge(shop, "catalog", "latency") == 0


def test_errors_fail_requests_with_the_chosen_status_but_not_the_admin_api(shop, admin_token):
    assert shop.set_faults("auth", admin_token, {"errors": {"rate": 1.0, "status": 503}}).status_code == 200
    response = requests.post(shop.url("auth", "/login"), json={"username": "alice", "password": "alice-pass"})
    assert response.status_code == 503 and response.headers["Content-Type"] == "application/problem+json"
    assert requests.get(shop.url("auth", "/healthz")).status_code == 200
    assert shop.clear_faults("auth", admin_token).status_code == 200
    assert requests.post(shop.url("auth", "/login"), json={"username": "alice", "password": "alice-pass"}).ok


def _payment_errors(shop):
    text = requests.get(shop.url("payment", "/metrics")).text
    return float(re.search(r'payment_errors_total\{reason="gateway_error"\} (\S+)', text).group(1))


def test_gateway_errors_fail_payments_without_charging_and_a_retry_succeeds(shop, otlp, admin_token):
    token = shop.login("bob")
    stock, errors_before = shop.stock(31), _payment_errors(shop)
    assert shop.set_faults("payment", admin_token, {"gateway_errors": {"rate": 1.0}}).status_code == 200
    key = uuid.uuid4().hex
    failed = shop.order(token, [{"product_id": 31, "quantity": 1}], key=key)
    assert failed.status_code == 502 and failed.json()["dependency"] == "payment"
    assert shop.stock(31) == stock  # released
    assert _payment_errors(shop) == errors_before + 1
    error_spans = poll_until(
        lambda: [s for s in otlp.spans if s.name == "gateway authorize" and s.status_code == 2],
        what="an ERROR gateway span",
    )
    assert error_spans[-1].attributes["shop.fault.injected"] == "gateway_errors"

    shop.clear_faults("payment", admin_token)
    retried = shop.order(token, [{"product_id": 31, "quantity": 1}], key=key)
    assert retried.status_code == 201
    assert shop.stock(31) == stock - 1


def _write_lock_taken_elsewhere(path):
    """True when BEGIN IMMEDIATE fails at once because another connection holds the write lock."""
    with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as probe:
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return True
        probe.execute("ROLLBACK")
        return False


def test_db_lock_holds_the_real_sqlite_write_lock(shop, admin_token):
    database = shop.workdir / "data" / "checkout" / "checkout.db"
    assert shop.set_faults("checkout", admin_token, {"db_lock": {"hold_ms": 1500, "release_ms": 50}}).ok
    poll_until(lambda: _write_lock_taken_elsewhere(database), timeout=3, what="the fault to take the write lock")
    token = shop.login("alice")
    slow, slow_s = timed(lambda: shop.order(token, [{"product_id": 32, "quantity": 1}]))
    assert slow.status_code == 201 and slow_s > 0.3  # the order waited for the lock, then went through

    shop.clear_faults("checkout", admin_token)
    assert not _write_lock_taken_elsewhere(database)


def _user_index_exists(shop):
    with closing(sqlite3.connect(shop.workdir / "data" / "checkout" / "checkout.db")) as db:
        return any(row[1] == "idx_orders_user_id" for row in db.execute("PRAGMA index_list(orders)"))


def _list_query_spans(otlp, trace_id=None):
    spans = otlp.spans_of(trace_id) if trace_id else list(otlp.spans)
    return [
        s
        for s in spans
        if s.service == "checkout" and "WHERE user_id = ? ORDER BY" in s.attributes.get("db.statement", "")
    ]


def test_missing_index_really_drops_it_and_makes_listing_orders_a_slow_scan(shop, otlp, admin_token):
    headers = {"Authorization": f"Bearer {shop.login('alice')}"}
    assert shop.set_faults("checkout", admin_token, {"missing_index": {}}).ok
    assert not _user_index_exists(shop)
    assert fault_gauge(shop, "checkout", "missing_index") == 1

    listed = requests.get(shop.url("checkout", "/orders"), headers=headers)
    assert listed.status_code == 200 and listed.json()["total"] > 100
    slow_log = poll_until(
        lambda: shop.logs(message="slow_query", operation="orders.list_by_user"),
        what="a slow_query log line",
    )[-1]
    assert slow_log["level"] == "WARNING" and slow_log["duration_ms"] >= 50
    assert "WHERE user_id = ?" in slow_log["statement"]
    slow_span = poll_until(lambda: _list_query_spans(otlp, slow_log["trace_id"]), what="the slow query's span")[0]
    assert slow_span.duration_ms >= 30

    shop.clear_faults("checkout", admin_token)
    assert _user_index_exists(shop)
    seen = len(_list_query_spans(otlp))
    assert requests.get(shop.url("checkout", "/orders"), headers=headers).ok
    fast_span = poll_until(lambda: _list_query_spans(otlp)[seen:], what="the indexed query's span")[-1]
    assert fast_span.duration_ms < slow_span.duration_ms / 5
