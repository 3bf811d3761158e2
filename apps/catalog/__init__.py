"""catalog: products, search, and the stock reservations checkout makes."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer

from .releases import RELEASES
from .store import CatalogStore
from .views import bp

SETTINGS = (Setting("SEED_PRODUCTS", integer(1, 100_000), default=600),)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "catalog", SETTINGS, test_config)
    db = open_database(app)
    store = CatalogStore(db)
    store.migrate()
    store.seed(app.config["SEED_PRODUCTS"])
    app.extensions["catalog.store"] = store
    app.register_blueprint(bp)
    init_app(app, db=db, releases=RELEASES, readiness=[("database", db.ping)])
    return app
