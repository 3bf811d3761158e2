"""checkout: places orders (auth → catalog → payment) and keeps the order history."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer, number, service_url

from .clients import Auth, Downstream
from .faults import checkout_faults
from .orders import OrderStore
from .releases import checkout_releases
from .views import Dependencies, bp

SETTINGS = (
    service_url("auth"),
    service_url("catalog"),
    service_url("payment"),
    Setting("DEPENDENCY_TIMEOUT_S", number(0.1, 60), default=5.0),
    Setting("SEED_ORDERS", integer(0, 5_000_000), default=250_000),
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "checkout", SETTINGS, test_config)
    db = open_database(app)
    orders = OrderStore(db)
    orders.migrate()
    orders.seed_history(app.config["SEED_ORDERS"])
    timeout = app.config["DEPENDENCY_TIMEOUT_S"]
    deps = Dependencies(
        auth=Auth("auth", app.config["AUTH_URL"], timeout),
        catalog=Downstream("catalog", app.config["CATALOG_URL"], timeout),
        payment=Downstream("payment", app.config["PAYMENT_URL"], timeout),
    )
    app.extensions["checkout.orders"] = orders
    app.extensions["checkout.deps"] = deps
    app.register_blueprint(bp)
    init_app(
        app,
        db=db,
        releases=checkout_releases(orders),
        faults=checkout_faults(db, orders),
        readiness=[
            ("database", db.ping),
            ("auth", deps.auth.check_alive),
            ("catalog", deps.catalog.check_alive),
            ("payment", deps.payment.check_alive),
        ],
    )
    return app
