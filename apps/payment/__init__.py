"""payment: validates cards, authorizes them at a simulated gateway, records the outcome once per order."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer

from .faults import payment_faults
from .gateway import Gateway
from .releases import RELEASES
from .store import PaymentStore
from .views import bp, recover

SETTINGS = (Setting("GATEWAY_LATENCY_MS", integer(0, 10_000), default=60),)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "payment", SETTINGS, test_config)
    db = open_database(app)
    store = PaymentStore(db)
    store.migrate()
    recover(store)
    gateway = Gateway(app.config["GATEWAY_LATENCY_MS"])
    app.extensions["payment.store"] = store
    app.extensions["payment.gateway"] = gateway
    app.register_blueprint(bp)
    init_app(app, db=db, releases=RELEASES, faults=payment_faults(gateway), readiness=[("database", db.ping)])
    return app
