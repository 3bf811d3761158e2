"""checkout: places orders (auth → catalog → payment) and keeps the order history."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer, number, service_url

from . import reconciler
from .clients import Auth, Downstream
from .faults import checkout_faults
from .orders import DEFAULT_STALE_AFTER_S, OrderStore
from .releases import checkout_releases
from .views import Dependencies, bp

SETTINGS = (
    service_url("auth"),
    service_url("catalog"),
    service_url("payment"),
    Setting("DEPENDENCY_TIMEOUT_S", number(0.1, 60), default=5.0),
    Setting("SEED_ORDERS", integer(0, 5_000_000), default=250_000),
    # The reconciler (checkout.reconciler): how often it looks (0: never), and when a pending order is abandoned.
    Setting("RECONCILE_INTERVAL_S", number(0, 3600), default=15.0),
    Setting("ORDER_STALE_AFTER_S", number(1, 86_400), default=DEFAULT_STALE_AFTER_S),
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "checkout", SETTINGS, test_config)
    db = open_database(app)
    orders = OrderStore(db, app.config["ORDER_STALE_AFTER_S"])
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
    # Tests drive a reconciler themselves (Reconciler.run_once); a served checkout runs its own.
    if app.config["RECONCILE_INTERVAL_S"] and not app.testing:
        reconciler.start(app, orders, app.config["RECONCILE_INTERVAL_S"])
    return app
