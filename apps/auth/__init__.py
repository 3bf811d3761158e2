"""auth: logs users in and issues the JWTs every other service verifies."""

from __future__ import annotations

from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer, text

from .releases import RELEASES
from .users import UserStore
from .views import bp

SETTINGS = (
    Setting("TOKEN_TTL_S", integer(60, 86_400), default=3600),
    # Demo users are documented lab data; override their passwords here.
    Setting("DEMO_ALICE_PASSWORD", text(8, 128), default="alice-pass"),
    Setting("DEMO_BOB_PASSWORD", text(8, 128), default="bob-pass"),
    # No default outside native dev runs: compose hands over a generated one (DEMO_ADMIN_PASSWORD_FILE).
    Setting("DEMO_ADMIN_PASSWORD", text(8, 128), dev_default="admin-pass"),
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "auth", SETTINGS, test_config)
    db = open_database(app)
    users = UserStore(db)
    users.migrate()
    users.seed_demo_users(
        {
            "alice": (app.config["DEMO_ALICE_PASSWORD"], ("customer",)),
            "bob": (app.config["DEMO_BOB_PASSWORD"], ("customer",)),
            "admin": (app.config["DEMO_ADMIN_PASSWORD"], ("admin",)),
        }
    )
    app.extensions["auth.users"] = users
    app.register_blueprint(bp)
    init_app(app, db=db, releases=RELEASES, readiness=[("database", db.ping)])
    return app
