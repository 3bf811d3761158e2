"""POST /login and GET /verify."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from flask import Blueprint, current_app, request

from shoplib.api import operation
from shoplib.app import extension
from shoplib.errors import Problem, unauthorized
from shoplib.security import current_principal, issue_token

from .metrics import LOCKOUTS, LOGINS
from .schemas import Credentials, Principal, Token
from .throttle import LoginThrottle
from .users import HashingBusy, UserStore

bp = Blueprint("auth", __name__)
_log = logging.getLogger("auth")
# Keys the digest a rejected login is logged with: repeats of one name can be counted in the logs, but the name
# (anything an attacker sends, or a password typed in the wrong field) never appears, nor can it be guessed back.
_DIGEST_KEY = secrets.token_bytes(32)


@bp.post("/login")
@operation("Log in: a bearer token for the customer's requests", body=Credentials, responses={200: Token})
def login(body: Credentials) -> Any:
    username, password = body.username, body.password
    address = request.remote_addr or "unknown"
    throttle = extension("auth.throttle", LoginThrottle)
    retry_after = throttle.retry_after(username, address)
    if retry_after:
        LOGINS.labels("throttled").inc()
        raise Problem(
            429,
            "Too many requests",
            f"Too many failed logins; try again in {retry_after} s.",
            kind="login-throttled",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        roles = extension("auth.users", UserStore).authenticate(username, password)
    except HashingBusy:
        LOGINS.labels("busy").inc()
        raise Problem(
            503,
            "Busy",
            "Too many logins at once; try again in a second.",
            kind="login-busy",
            headers={"Retry-After": "1"},
        ) from None
    if roles is None:
        _rejected(throttle, username, address)
        raise unauthorized("Invalid username or password.")
    throttle.succeeded(username)
    LOGINS.labels("accepted").inc()
    _log.info("login_accepted", extra={"username": username})
    ttl = current_app.config["TOKEN_TTL_S"]
    return {"access_token": issue_token(username, roles, ttl), "token_type": "Bearer", "expires_in": ttl}


def _rejected(throttle: LoginThrottle, username: str, address: str) -> None:
    verdict = throttle.failed(username, address)
    digest = hmac.new(_DIGEST_KEY, username.encode(), hashlib.sha256).hexdigest()[:12]
    LOGINS.labels("rejected").inc()
    _log.info(
        "login_rejected",
        extra={"username_digest": digest, "recent_failures": verdict.recent_failures, "client_address": address},
    )
    for scope, seconds in verdict.locked:
        LOCKOUTS.labels(scope).inc()
        key = {"username_digest": digest} if scope == "username" else {"client_address": address}
        _log.warning("login_locked", extra={"scope": scope, "lockout_s": seconds, **key})


@bp.get("/verify")
@operation(
    "Who a bearer token belongs to (how checkout checks its customers)", responses={200: Principal}, secured=True
)
def verify() -> Any:
    principal = current_principal()
    return {"sub": principal.sub, "roles": list(principal.roles), "expires_at": principal.expires_at}
