"""The real Prometheus, on the project's prometheus.yml and rules, scraping the real shop, catches an
injected payment error spike, and lets go when it is cleared."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from shop import poll_until


class Traffic:
    """Orders and catalog reads on a background thread, about five requests a second."""

    def __init__(self, shop) -> None:
        self.shop = shop
        self.token = shop.login("bob")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.shop.order(self.token, [{"product_id": 41, "quantity": 1}], key=uuid.uuid4().hex)
            self.shop.session.get(self.shop.url("catalog", "/products?limit=5"))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _firing(prometheus, alertname, **labels):
    return [
        a
        for a in prometheus.firing()
        if a["labels"]["alertname"] == alertname and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def _is(prometheus, alertname, labels, *, firing):
    return lambda: bool(_firing(prometheus, alertname, **labels)) == firing


@pytest.mark.usefixtures("clean_faults")
def test_a_payment_error_spike_fires_its_alerts_and_they_resolve(shop, prometheus, admin_token):
    watched = {"PaymentErrorsSpike": {}, "HighErrorRate": {"service": "payment"}}
    with Traffic(shop):
        time.sleep(15)  # healthy traffic first: nothing may fire on it
        assert not any(_firing(prometheus, name, **labels) for name, labels in watched.items())

        started = time.monotonic()
        assert shop.set_faults("payment", admin_token, {"gateway_errors": {"rate": 1.0}}).ok
        for name, labels in watched.items():
            poll_until(_is(prometheus, name, labels, firing=True), timeout=120, interval=1, what=f"{name} fires")
            print(f"\n{name} firing {time.monotonic() - started:.0f} s after the fault was injected")
        alert = _firing(prometheus, "PaymentErrorsSpike")[0]
        assert alert["labels"]["severity"] == "page" and "payment errors per second" in alert["annotations"]["summary"]

        cleared = time.monotonic()
        assert shop.clear_faults("payment", admin_token).ok
        for name, labels in watched.items():
            poll_until(_is(prometheus, name, labels, firing=False), timeout=180, interval=1, what=f"{name} resolves")
            print(f"{name} resolved {time.monotonic() - cleared:.0f} s after the fault was cleared")
