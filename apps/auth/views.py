"""POST /login and GET /verify."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, current_app

from shoplib.app import extension
from shoplib.errors import unauthorized
from shoplib.security import current_principal, issue_token
from shoplib.validation import Fields, json_body

from .metrics import LOGINS
from .users import UserStore

bp = Blueprint("auth", __name__)
_log = logging.getLogger("auth")
_USERNAME = re.compile(r"[A-Za-z0-9_.-]+")


@bp.post("/login")
def login() -> Any:
    body = json_body()
    fields = Fields()
    username = fields.string(body, "username", max_length=64, pattern=_USERNAME, hint="letters, digits, . _ - only")
    password = fields.string(body, "password", max_length=256)
    fields.raise_if_any()
    assert username is not None and password is not None
    roles = extension("auth.users", UserStore).authenticate(username, password)
    if roles is None:
        LOGINS.labels("rejected").inc()
        _log.info("login_rejected", extra={"username": username})
        raise unauthorized("Invalid username or password.")
    LOGINS.labels("accepted").inc()
    _log.info("login_accepted", extra={"username": username})
    ttl = current_app.config["TOKEN_TTL_S"]
    return {"access_token": issue_token(username, roles, ttl), "token_type": "Bearer", "expires_in": ttl}


@bp.get("/verify")
def verify() -> Any:
    principal = current_principal()
    return {"sub": principal.sub, "roles": list(principal.roles), "expires_at": principal.expires_at}
