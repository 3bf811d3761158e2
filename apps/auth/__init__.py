"""auth: logs users in and issues the JWTs every other service verifies."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask

from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, integer, number, text

from .releases import RELEASES
from .throttle import Limits, LoginThrottle
from .users import UserStore
from .views import bp

SETTINGS = (
    Setting("TOKEN_TTL_S", integer(60, 86_400), default=3600),
    # Demo users are documented lab data; override their passwords here.
    Setting("DEMO_ALICE_PASSWORD", text(8, 128), default="alice-pass"),
    Setting("DEMO_BOB_PASSWORD", text(8, 128), default="bob-pass"),
    # Never a published default: compose hands over a generated one (DEMO_ADMIN_PASSWORD_FILE), and so does the
    # native supervisor (<data dir>/admin-password). A dev process started on its own gets a random one nobody
    # knows: its admin cannot log in, and nobody else can either.
    Setting("DEMO_ADMIN_PASSWORD", text(8, 128), dev_default=secrets.token_urlsafe(24)),
    # Failed logins within the window that lock a username, or a client address (one address may carry many
    # users: the load generator's, a NAT's). A lock refuses every login with 429 and Retry-After; it lasts
    # LOGIN_LOCKOUT_S, twice as long each further time, up to LOGIN_MAX_LOCKOUT_S.
    Setting("LOGIN_MAX_FAILURES_PER_USER", integer(1, 1_000_000), default=5),
    Setting("LOGIN_MAX_FAILURES_PER_ADDRESS", integer(1, 1_000_000), default=50),
    Setting("LOGIN_FAILURE_WINDOW_S", integer(1, 86_400), default=60),
    Setting("LOGIN_LOCKOUT_S", integer(1, 86_400), default=30),
    Setting("LOGIN_MAX_LOCKOUT_S", integer(1, 86_400), default=900),
    Setting("LOGIN_TRACKED_KEYS", integer(1, 1_000_000), default=10_000),  # per scope: usernames, addresses
    # Logins hashing or waiting to hash at once (two hash at a time), and how long one waits for its turn; past
    # either, 503 with Retry-After. 24 of auth's THREADS at most, so /verify always finds 8 free. A peak hour's
    # burst of logins must wait rather than fail: Locust spawning 17 users a second on a CI machine kept up to 13
    # logins pending (waits up to 0.8 s), and 5 of 204 got 503 with the earlier limit of 12.
    Setting("LOGIN_MAX_PENDING", integer(1, 256), default=24),
    Setting("LOGIN_HASH_WAIT_S", number(0, 60), default=10.0),
)
# gunicorn threads (shoplib.serve): waiting logins hold threads but no memory (only two derive at a time).
THREADS = 32


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "auth", SETTINGS, test_config)
    db = open_database(app)
    users = UserStore(db, app.config["LOGIN_MAX_PENDING"], app.config["LOGIN_HASH_WAIT_S"])
    users.migrate()
    users.seed_demo_users(
        {
            "alice": (app.config["DEMO_ALICE_PASSWORD"], ("customer",)),
            "bob": (app.config["DEMO_BOB_PASSWORD"], ("customer",)),
            "admin": (app.config["DEMO_ADMIN_PASSWORD"], ("admin",)),
        }
    )
    app.extensions["auth.users"] = users
    app.extensions["auth.throttle"] = LoginThrottle(_limits(app, "USER"), _limits(app, "ADDRESS"))
    app.register_blueprint(bp)
    init_app(app, db=db, releases=RELEASES, readiness=[("database", db.ping)])
    return app


def _limits(app: Flask, scope: str) -> Limits:
    config = app.config
    return Limits(
        max_failures=config[f"LOGIN_MAX_FAILURES_PER_{scope}"],
        window_s=config["LOGIN_FAILURE_WINDOW_S"],
        lockout_s=config["LOGIN_LOCKOUT_S"],
        max_lockout_s=config["LOGIN_MAX_LOCKOUT_S"],
        max_keys=config["LOGIN_TRACKED_KEYS"],
    )
