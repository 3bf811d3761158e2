"""payment: validates cards, authorizes them at a simulated gateway, records the outcome once per order."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer
from shoplib.faults import Fault, Param

from .gateway import Gateway
from .store import PaymentStore
from .views import bp

SETTINGS = (Setting("GATEWAY_LATENCY_MS", integer(0, 10_000), default=60),)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "payment", SETTINGS, test_config)
    db = open_database(app)
    store = PaymentStore(db)
    store.migrate()
    app.extensions["payment.store"] = store
    app.extensions["payment.gateway"] = Gateway(app.config["GATEWAY_LATENCY_MS"])
    app.register_blueprint(bp)
    gateway_errors = Fault(
        "gateway_errors",
        "The card gateway fails a share (`rate`) of authorizations: the payment error spike.",
        (Param("rate", float, 0, 1),),
    )
    init_app(app, faults=[gateway_errors], readiness=[("database", db.ping)])
    return app
