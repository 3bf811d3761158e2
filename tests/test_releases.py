"""Releases: deployed at runtime by an admin, split by a canary, promoted, rolled back, kept across a restart,
and visible in every RED metric. Each service's later release changes behaviour for real."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from contextlib import closing

import pytest
import requests

from conftest import bearer
from shop import GOOD_CARD, poll_until, python

SERVICES_AND_RELEASES = {
    "catalog": ("1.3.0", "1.4.0"),
    "checkout": ("1.8.0", "1.9.0"),
    "payment": ("2.4.0", "2.5.0"),
    "auth": ("1.2.0", "1.3.0"),
}
LIGHT = {"catalog": {"SEED_PRODUCTS": 30}, "checkout": {"SEED_ORDERS": 0}, "payment": {"GATEWAY_LATENCY_MS": 0}}


@pytest.fixture
def admin(token_for):
    return bearer(token_for("operator", roles=("admin",)))


def release_of(client, admin):
    response = client.get("/admin/release", headers=admin)
    assert response.status_code == 200
    return response.json


def versions_served(client, path, count):
    """How many of `count` requests each version served, read from the version label of the RED histogram."""
    before = _served(client, path)
    for _ in range(count):
        client.get(path)
    after = _served(client, path)
    served = {version: after[version] - before.get(version, 0) for version in after}
    return {version: count for version, count in served.items() if count}


def _served(client, path):
    text = client.get("/metrics").get_data(as_text=True)
    pattern = rf'http_request_duration_seconds_count\{{[^}}]*route="{re.escape(path)}"[^}}]*version="([^"]+)"\}} (\S+)'
    counts: dict[str, float] = {}
    for version, value in re.findall(pattern, text):
        counts[version] = counts.get(version, 0) + float(value)
    return counts


@pytest.mark.parametrize("service", list(SERVICES_AND_RELEASES))
def test_every_service_starts_on_its_first_release_and_offers_a_later_one(client_for, admin, service):
    client = client_for(service, **LIGHT.get(service, {}))
    first, later = SERVICES_AND_RELEASES[service]
    state = release_of(client, admin)
    assert state["stable"]["version"] == first and state["canary"] is None and state["previous"] is None
    assert [r["version"] for r in state["available"]] == [first, later]
    assert all(r["summary"] for r in state["available"])
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'shop_release_info{{service="{service}",track="stable",version="{first}"}} 1.0' in metrics


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/release"),
        ("PUT", "/admin/release"),
        ("POST", "/admin/release/promote"),
        ("POST", "/admin/release/rollback"),
    ],
)
def test_release_endpoints_need_an_admin(client_for, token_for, method, path):
    client = client_for("catalog", **LIGHT["catalog"])
    body = {"version": "1.4.0"}
    assert client.open(path, method=method, json=body).status_code == 401
    assert client.open(path, method=method, json=body, headers=bearer(token_for())).status_code == 403
    assert client.open(path, method=method, json=body, headers=bearer("forged.token.here")).status_code == 401


def test_deploy_then_rollback_returns_to_the_earlier_release_and_keeps_the_history(client_for, admin):
    client = client_for("catalog", **LIGHT["catalog"])
    deployed = client.put("/admin/release", json={"version": "1.4.0"}, headers=admin)
    assert deployed.status_code == 200
    assert deployed.json["stable"]["version"] == "1.4.0" and deployed.json["previous"] == "1.3.0"
    assert versions_served(client, "/products", 5) == {"1.4.0": 5}
    # The same deploy again changes nothing and records nothing.
    assert client.put("/admin/release", json={"version": "1.4.0"}, headers=admin).status_code == 200
    rolled = client.post("/admin/release/rollback", json={"reason": "search got slow"}, headers=admin)
    assert rolled.status_code == 200 and rolled.json["stable"]["version"] == "1.3.0"
    assert [(h["action"], h["version"], h["actor"]) for h in rolled.json["history"]] == [
        ("rollback", "1.4.0", "operator"),
        ("deploy", "1.4.0", "operator"),
    ]
    assert rolled.json["history"][0]["reason"] == "search got slow"
    nothing = client.post("/admin/release/rollback", headers=admin)
    assert nothing.status_code == 409 and "no earlier release" in nothing.json["detail"]


def test_a_canary_serves_its_share_of_requests_and_is_promoted(client_for, admin):
    client = client_for("catalog", **LIGHT["catalog"])
    canary = client.put("/admin/release", json={"version": "1.4.0", "canary_percent": 25}, headers=admin)
    assert canary.status_code == 200
    assert canary.json["stable"]["version"] == "1.3.0"
    assert canary.json["canary"]["version"] == "1.4.0" and canary.json["canary"]["percent"] == 25
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'shop_release_info{service="catalog",track="canary",version="1.4.0"} 1.0' in metrics
    served = versions_served(client, "/products", 800)
    # 25% of 800 is 200; a binomial's standard deviation here is about 12, so 150-250 fails once in 10^5 runs.
    assert sum(served.values()) == 800 and 150 <= served["1.4.0"] <= 250
    promoted = client.post("/admin/release/promote", headers=admin)
    assert promoted.status_code == 200
    assert promoted.json["stable"]["version"] == "1.4.0" and promoted.json["canary"] is None
    assert versions_served(client, "/products", 20) == {"1.4.0": 20}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'track="canary"' not in metrics.split("# HELP shop_release_info")[1].split("# HELP")[0]


def test_rolling_back_a_canary_drops_only_the_canary(client_for, admin):
    client = client_for("catalog", **LIGHT["catalog"])
    client.put("/admin/release", json={"version": "1.4.0", "canary_percent": 50}, headers=admin)
    rolled = client.post("/admin/release/rollback", headers=admin)
    assert rolled.json["stable"]["version"] == "1.3.0" and rolled.json["canary"] is None
    assert versions_served(client, "/products", 20) == {"1.3.0": 20}
    assert client.post("/admin/release/promote", headers=admin).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "9.9.9"}, "version"),
        ({}, "version"),
        ({"version": 2}, "version"),
        ({"version": "1.4.0", "canary_percent": 101}, "canary_percent"),
        ({"version": "1.4.0", "canary_percent": "ten"}, "canary_percent"),
        ({"version": "1.4.0", "percent": 10}, "percent"),
    ],
)
def test_a_bad_deploy_is_a_400_naming_the_field_and_changes_nothing(client_for, admin, body, field):
    client = client_for("catalog", **LIGHT["catalog"])
    response = client.put("/admin/release", json=body, headers=admin)
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json["errors"]]
    assert release_of(client, admin)["history"] == []


def test_a_running_canary_can_be_widened_but_the_stable_release_is_no_canary(client_for, admin):
    client = client_for("auth")
    first = client.put("/admin/release", json={"version": "1.3.0", "canary_percent": 10}, headers=admin)
    wider = client.put("/admin/release", json={"version": "1.3.0", "canary_percent": 40}, headers=admin)
    assert wider.status_code == 200 and wider.json["canary"]["percent"] == 40
    assert wider.json["canary"]["since"] == first.json["canary"]["since"]
    clash = client.put("/admin/release", json={"version": "1.2.0", "canary_percent": 10}, headers=admin)
    assert clash.status_code == 409 and "already serves" in clash.json["detail"]
    assert client.post("/admin/release/rollback", data="not json", headers=admin).status_code == 415


def test_the_deployment_survives_a_restart(make_app, admin):
    first = make_app("catalog", **LIGHT["catalog"]).test_client()
    first.put("/admin/release", json={"version": "1.4.0", "canary_percent": 30}, headers=admin)
    restarted = make_app("catalog", **LIGHT["catalog"]).test_client()  # same DATA_DIR: the same service again
    state = release_of(restarted, admin)
    assert state["stable"]["version"] == "1.3.0" and state["canary"]["version"] == "1.4.0"
    assert state["canary"]["percent"] == 30 and [h["action"] for h in state["history"]] == ["canary"]


def _user_index_exists(tmp_path):
    with closing(sqlite3.connect(tmp_path / "checkout" / "checkout.db")) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%user_id%'").fetchall()
    return bool(rows)


def test_checkout_1_9_0_drops_the_user_index_and_rolling_back_recreates_it(make_app, admin, tmp_path):
    client = make_app("checkout", SEED_ORDERS=0).test_client()
    assert _user_index_exists(tmp_path)
    client.put("/admin/release", json={"version": "1.9.0"}, headers=admin)
    assert not _user_index_exists(tmp_path)
    # A restart runs the shop's own migrations first; the release that runs must win over them.
    make_app("checkout", SEED_ORDERS=0)
    assert not _user_index_exists(tmp_path)
    client.post("/admin/release/rollback", headers=admin)
    assert _user_index_exists(tmp_path)


def test_payment_2_5_0_fails_about_15_percent_of_payments(client_for, admin, token_for):
    client = client_for("payment", **LIGHT["payment"])
    customer = bearer(token_for("checkout", ("service",), customer="alice"))  # checkout's, for a customer

    def outcomes(count):
        statuses = [
            client.post(
                "/payments",
                json={"order_id": uuid.uuid4().hex, "amount": 5, "currency": "USD", "card": GOOD_CARD},
                headers=customer,
            ).status_code
            for _ in range(count)
        ]
        return statuses.count(502), statuses.count(201)

    assert outcomes(100) == (0, 100)
    client.put("/admin/release", json={"version": "2.5.0"}, headers=admin)
    failed, captured = outcomes(400)
    # 15% of 400 is 60 (standard deviation about 7): 30-90 is far outside chance.
    assert 30 <= failed <= 90 and failed + captured == 400


def test_catalog_1_4_0_runs_a_query_per_product_found(client_for, admin):
    client = client_for("catalog", **LIGHT["catalog"])

    def gets():
        text = client.get("/metrics").get_data(as_text=True)
        match = re.search(r'db_query_duration_seconds_count\{operation="products.get",service="catalog"\} (\S+)', text)
        return float(match.group(1)) if match else 0.0

    before = gets()
    assert client.get("/products?limit=10").json["total"] == 30
    assert gets() == before
    client.put("/admin/release", json={"version": "1.4.0"}, headers=admin)
    listed = client.get("/products?limit=10").json
    assert len(listed["items"]) == 10 and listed["total"] == 30
    assert gets() == before + 10


def test_the_version_is_a_label_of_every_request_metric(client_for, admin):
    client = client_for("auth")
    client.post("/login", json={"username": "alice", "password": "alice-pass"})
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'http_request_duration_seconds_count\{[^}]*route="/login"[^}]*version="1.2.0"\}', text)


@pytest.mark.integration
def test_spans_and_log_records_say_which_release_served_them(shop, otlp, admin_token):
    """Through the real processes and exporters: a canary's requests carry its version on the server span, on
    the database spans under it, on the exported log records and on the stdout JSON lines."""
    admin = bearer(admin_token)
    url = shop.url("catalog", "/admin/release")
    assert requests.put(url, json={"version": "1.4.0", "canary_percent": 50}, headers=admin).status_code == 200
    try:
        traces = {uuid.uuid4().hex: None for _ in range(30)}
        for trace_id in traces:
            headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
            assert requests.get(shop.url("catalog", "/products?limit=3"), headers=headers).status_code == 200
    finally:
        assert requests.post(f"{url}/rollback", headers=admin).status_code == 200

    def versions(trace_id):
        spans = otlp.spans_of(trace_id)
        records = otlp.logs_of(trace_id)
        if not spans or not records:
            return None
        return {s.attributes.get("service.version") for s in spans} | {
            r.attributes.get("service.version") for r in records
        }

    seen = {trace_id: poll_until(lambda t=trace_id: versions(t), what="spans and logs") for trace_id in traces}
    # Each request is one release's from end to end, and the canary served some of them.
    assert all(len(found) == 1 for found in seen.values()), seen
    assert {next(iter(found)) for found in seen.values()} == {"1.3.0", "1.4.0"}
    printed = {line["trace_id"]: line["service.version"] for line in shop.logs(message="request") if "trace_id" in line}
    assert {printed[t] for t in traces} == {"1.3.0", "1.4.0"}


@pytest.mark.integration
def test_shoplab_deploys_lists_and_rolls_back_through_the_admin_endpoints(shop):
    env = {f"{service.upper()}_URL": shop.url(service) for service in shop.urls}
    # As an operator of the native shop would: a login with the admin's password from its data folder.
    env["DEMO_ADMIN_PASSWORD_FILE"] = shop.supervisor.environ["DEMO_ADMIN_PASSWORD_FILE"]

    def shoplab(*args):
        return python("-m", "incident.cli", *args, env=env)

    deployed = shoplab("deploy", "catalog", "1.4.0", "--canary", "20")
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == "catalog: stable 1.3.0, canary 1.4.0 on 20%"
    listed = json.loads(shoplab("releases", "--json").stdout)
    assert listed["unreachable"] == [] and listed["releases"]["catalog"]["canary"]["percent"] == 20
    assert shoplab("rollback", "catalog", "--reason", "test").stdout.strip() == "catalog: stable 1.3.0"
    again = shoplab("rollback", "catalog")
    assert again.returncode == 1 and "409" in again.stderr and "Traceback" not in again.stderr
    unknown = shoplab("deploy", "catalog", "7.0.0")
    assert unknown.returncode == 1 and "version: unknown release" in unknown.stderr
    gone = python("-m", "incident.cli", "releases", env={**env, "PAYMENT_URL": "http://127.0.0.1:9"})
    assert gone.returncode == 2 and "payment: no answer" in gone.stderr
