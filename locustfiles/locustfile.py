"""The shop's customers: they browse and search the catalog, view products, log in, order and check their orders.

    locust -f locustfiles/locustfile.py --class-picker                  # web UI on :8089, shape picker
    locust -f locustfiles/locustfile.py --headless --shape PeakHourShape --csv reports/peak --html reports/peak.html

One Locust process drives services on different ports, so every request uses a full URL built from
SHOP_CATALOG_URL, SHOP_AUTH_URL and SHOP_CHECKOUT_URL (defaults: the native ports 8081, 8084, 8082; in compose
http://catalog:8080 and so on); --host is not used. Payment is reached through checkout, as customers do.
SHOP_THINK_TIME_SCALE multiplies the think times (1-5 s between actions). Demo passwords follow the shop's
DEMO_<USER>_PASSWORD variables. Shapes (Steady, PeakHourShape, Spike) are in _shapes.py; _retention.py keeps a
master that runs for days (the lab's background load) within its memory.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import _exporter as exporter
import _retention as retention
import _settings as settings
import _shapes as shapes
import gevent
import requests
from geventhttpclient.response import HTTPConnectionClosed
from locust import FastHttpUser, User, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

_log = logging.getLogger("shoppers")
SETTINGS = settings.load_or_exit(os.environ)
DATA = json.loads(Path(__file__).with_name("shop_data.json").read_text())
CUSTOMERS = [
    {"username": c["username"], "password": os.environ.get(f"DEMO_{c['username'].upper()}_PASSWORD", c["password"])}
    for c in DATA["customers"]
]
PRODUCT_IDS = list(range(1, DATA["catalog_size"] + 1))
# A few products get most of the views (roughly Zipf), as in any shop.
VIEW_POPULARITY = list(itertools.accumulate(1 / rank**0.8 for rank in PRODUCT_IDS))
PAGES = (0, 0, 0, 0, 1, 1, 2)  # most visitors never leave page one
TOKEN_RENEWAL_MARGIN_S = 60  # log in again this long before the token expires, as a web front end would
# No answer because the connection went away: FastHttpUser's errors, then HttpUser's (bench/ only).
CONNECTION_LOST = (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError, requests.ConnectionError)

# Locust finds shapes among the locustfile's names and, unless --shape says otherwise (_shapes.py), runs the
# first: Steady, which honours -u, -r and -t like a run without a shape.
Steady = shapes.Steady
PeakHourShape = shapes.PeakHourShape
Spike = shapes.Spike


def body_of(response: Any) -> dict[str, Any]:
    """The JSON object in a response, or {} when there is none (no response, not JSON)."""
    try:
        body = response.json() if response.text else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def closed_before_answering(response: Any) -> bool:
    """No response at all because the connection closed (or was reset) after the request went out."""
    return response.status_code == 0 and isinstance(getattr(response, "error", None), CONNECTION_LOST)


def sold_out(response: Any) -> bool:
    return bool(response.status_code == 409 and "unavailable" in body_of(response))  # a business outcome, not an error


def declined(response: Any) -> bool:
    return bool(response.status_code == 402 and body_of(response).get("reason") == DATA["declined_reason"])


def judge(response: Any, expected: bool, wanted: str) -> None:
    """Record an expected outcome as a success (a 402 or a 409 may be one) and anything else as a failure."""
    if expected:
        response.success()
    elif response.status_code:
        # Status and title only: Locust groups failures by message, and ids or URLs would make each one unique.
        response.failure(f"expected {wanted}, got {response.status_code} {body_of(response).get('title', '')}")
    # Status 0 means no response at all: Locust records the connection error itself.


class ResendOnce(Exception):
    """Raised inside a catch_response block: Locust records nothing for that attempt."""


class ShopJourneys(User):
    """The journeys, independent of the HTTP client; Shopper below adds the client."""

    abstract = True
    host = SETTINGS.catalog_url  # Locust insists on a host; every request uses a full URL anyway
    wait_time = between(1 * SETTINGS.think_time_scale, 5 * SETTINGS.think_time_scale)
    client: Any  # FastHttpSession (Shopper) or HttpSession (the client-cost comparison in bench/)

    def on_start(self) -> None:
        self.customer = random.choice(CUSTOMERS)
        self.token: str | None = None
        self.token_renew_at = 0.0

    @task(60)
    def browse_category(self) -> None:
        category = random.choice(DATA["categories"])
        query = urlencode({"category": category, "limit": 20, "offset": 20 * random.choice(PAGES)})
        self.send("GET", f"{SETTINGS.catalog_url}/products?{query}", "catalog /products?category=[category]")

    @task(50)
    def search(self) -> None:
        query = urlencode({"q": random.choice(DATA["search_terms"]), "limit": 20})
        self.send("GET", f"{SETTINGS.catalog_url}/products?{query}", "catalog /products?q=[term]")

    @task(60)
    def view_product(self) -> None:
        product_id = random.choices(PRODUCT_IDS, cum_weights=VIEW_POPULARITY)[0]
        self.send("GET", f"{SETTINGS.catalog_url}/products/{product_id}", "catalog /products/[id]")

    @task(6)
    def log_in(self) -> None:
        """A returning customer starts a new session, as either demo user."""
        self.customer = random.choice(CUSTOMERS)
        self.log_in_now()

    @task(10)
    def list_my_orders(self) -> None:
        if headers := self.bearer():
            self.send("GET", f"{SETTINGS.checkout_url}/orders?limit=10", "checkout /orders", headers=headers)

    @task(13)
    def place_order(self) -> None:
        self.order(DATA["cards"]["approving"], "checkout /orders", declining=False)

    @task(1)
    def pay_with_declining_card(self) -> None:
        self.order(DATA["cards"]["declining"], "checkout /orders (declining card)", declining=True)

    def send(
        self,
        method: str,
        url: str,
        name: str,
        expected: Callable[[Any], bool] = lambda response: response.status_code == 200,
        wanted: str = "200",
        **kwargs: Any,
    ) -> Any:
        """One request, judged by `expected`; the response is returned.

        A request that goes out on a kept-alive connection just as the server closes it (gunicorn closes idle
        ones after 5 s) gets no answer at all. Browsers resend such a request once, and the shop makes that safe
        even for an order (the same Idempotency-Key), so this does too; only a second loss is a failure.
        """
        attempt = {"name": name, "expected": expected, "wanted": wanted, **kwargs}
        try:
            return self.send_once(method, url, may_resend=True, **attempt)
        except ResendOnce:
            _log.info("%s %s: the connection closed before any answer; sending it once more", method, name)
            return self.send_once(method, url, may_resend=False, **attempt)

    def send_once(
        self,
        method: str,
        url: str,
        *,
        name: str,
        expected: Callable[[Any], bool],
        wanted: str,
        may_resend: bool,
        **kwargs: Any,
    ) -> Any:
        with self.client.request(method, url, name=name, catch_response=True, **kwargs) as response:
            if may_resend and closed_before_answering(response):
                raise ResendOnce
            judge(response, expected(response), wanted)
            if response.status_code == 401:
                self.token = None
            return response

    def log_in_now(self) -> None:
        credentials = {"username": self.customer["username"], "password": self.customer["password"]}
        response = self.send(
            "POST",
            f"{SETTINGS.auth_url}/login",
            "auth /login",
            lambda response: response.status_code == 200 and "access_token" in body_of(response),
            "200 with a token",
            json=credentials,
        )
        body = body_of(response) if response.status_code == 200 else {}
        self.token = body.get("access_token")
        if self.token:
            expires_in = float(body.get("expires_in", 0))
            self.token_renew_at = time.monotonic() + expires_in - min(TOKEN_RENEWAL_MARGIN_S, expires_in / 2)

    def bearer(self) -> dict[str, str] | None:
        if self.token is None or time.monotonic() >= self.token_renew_at:
            self.log_in_now()
        return {"Authorization": f"Bearer {self.token}"} if self.token else None

    def order(self, card: dict[str, str], name: str, declining: bool) -> None:
        headers = self.bearer()
        if headers is None:
            return
        # Spread over the whole catalog, unlike views: the smallest stocks (200 units) then last about three days
        # of the lab's steady load and most last weeks, instead of the popular few selling out within hours.
        products = random.sample(PRODUCT_IDS, random.choice(DATA["lines_per_order"]))
        items = [{"product_id": p, "quantity": random.choice(DATA["quantity_per_line"])} for p in products]
        headers["Idempotency-Key"] = uuid.uuid4().hex  # one key per order, kept if it has to be sent again
        if declining:
            expected, wanted = (lambda r: declined(r) or sold_out(r)), f"402 {DATA['declined_reason']}"
        else:
            expected, wanted = (lambda r: r.status_code == 201 or sold_out(r)), "201"
        body = {"items": items, "card": card}
        self.send("POST", f"{SETTINGS.checkout_url}/orders", name, expected, wanted, json=body, headers=headers)


class Shopper(ShopJourneys, FastHttpUser):
    """A customer of the shop.

    FastHttpUser, not HttpUser, on measured cost: the same journeys, 30 users at ~94 req/s against the native
    shop, cost Locust 1.26 CPU s per 1,000 requests on FastHttpUser and 2.34 on HttpUser (1.9x), on the
    2-vCPU machine of bench/baseline.json (`python bench/load_capacity.py --compare-clients` measures it again).
    Half the load generator's CPU is CPU left to the shop when both share a machine.
    """

    network_timeout = 10.0  # an order that takes 10 s has failed for the customer; don't wait 60 s
    connection_timeout = 5.0


@events.init.add_listener
def keep_statistics_bounded(environment: Environment, **_kwargs: Any) -> None:
    """The master (or a standalone Locust) trims its statistics every minute; workers hand theirs to the master
    every few seconds and start afresh, so they never pile up."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return

    def trim_every_minute() -> None:
        while True:
            gevent.sleep(60)
            retention.trim(runner.stats, time.time())

    gevent.spawn(trim_every_minute)


@events.init.add_listener
def serve_metrics(environment: Environment, **_kwargs: Any) -> None:
    """/metrics on the web UI (the master's, or a standalone Locust's) for Prometheus: what Locust sent."""
    web_ui, runner = environment.web_ui, environment.runner
    if web_ui is None or web_ui.app is None or runner is None:  # --headless has no web UI to serve it
        return

    def metrics() -> tuple[str, int, dict[str, str]]:
        rows = [
            exporter.Sent(entry.method or "", entry.name, entry.num_requests, entry.num_failures)
            for entry in runner.stats.entries.values()
        ]
        return exporter.exposition(rows, runner.user_count), 200, {"Content-Type": exporter.CONTENT_TYPE}

    web_ui.app.add_url_rule("/metrics", "shop_metrics", metrics)
