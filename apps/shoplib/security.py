"""Verifying auth-issued JWTs; the same check serves auth's /verify and every service's admin endpoints."""

from __future__ import annotations

import functools
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import jwt
from flask import current_app, g, request

from .errors import Problem, unauthorized

ALGORITHM = "HS256"  # pinned: a token's own "alg" header is never trusted
MAX_TOKEN_LENGTH = 4096
# The role of a token a service signs for itself to call another one's internal operations (checkout reserving
# stock and taking payments). auth never issues it: a customer's token can't call those operations.
SERVICE_ROLE = "service"
SERVICE_TOKEN_TTL_S = 60

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: tuple[str, ...]
    expires_at: int
    customer: str | None = None  # on a service's token: the customer it acts for, who owns what it creates


def issue_token(sub: str, roles: tuple[str, ...], ttl_s: int) -> str:
    """A token for `sub`, signed with the current app's settings (auth's logins)."""
    return sign_token(current_app.config, sub, roles, ttl_s)


def sign_token(
    settings: Mapping[str, Any], sub: str, roles: tuple[str, ...], ttl_s: int, *, customer: str | None = None
) -> str:
    """A token signed with JWT_SECRET for JWT_ISSUER and JWT_AUDIENCE in `settings` (any holder of the secret,
    such as the responder acting on the services' admin endpoints, or a test)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "iss": settings["JWT_ISSUER"],
        "aud": settings["JWT_AUDIENCE"],
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if customer is not None:
        claims["customer"] = customer
    return jwt.encode(claims, settings["JWT_SECRET"], algorithm=ALGORITHM)


def service_token(service: str, customer: str) -> str:
    """A short-lived token of the current app's service (SERVICE_ROLE) acting for `customer`."""
    return sign_token(current_app.config, service, (SERVICE_ROLE,), SERVICE_TOKEN_TTL_S, customer=customer)


def decode_token(token: str) -> Principal:
    """Verify signature, issuer, audience and expiry; any failure is a 401 problem."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("The bearer token is too long.")
    try:
        claims = jwt.decode(
            token,
            current_app.config["JWT_SECRET"],
            algorithms=[ALGORITHM],
            issuer=current_app.config["JWT_ISSUER"],
            audience=current_app.config["JWT_AUDIENCE"],
            options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("The bearer token has expired; log in again.") from None
    except jwt.InvalidTokenError:
        raise unauthorized("The bearer token is not valid.") from None
    roles = claims.get("roles", [])
    customer = claims.get("customer")
    if (
        not isinstance(claims["sub"], str)
        or not isinstance(roles, list)
        or not all(isinstance(r, str) for r in roles)
        or not isinstance(customer, str | None)
    ):
        raise unauthorized("The bearer token has malformed claims.")
    return Principal(sub=claims["sub"], roles=tuple(roles), expires_at=int(claims["exp"]), customer=customer)


def bearer_token(what: str = "an auth-issued token") -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized(f"Send {what} as 'Authorization: Bearer <token>'.")
    return token.strip()


def require_shared_token(expected: str, what: str) -> None:
    """A shared secret as the bearer token (a webhook's credentials), compared in constant time; 401 otherwise."""
    if not hmac.compare_digest(bearer_token(what).encode(), expected.encode()):
        raise unauthorized(f"The bearer token is not {what}.")


def current_principal() -> Principal:
    """The verified caller of this request (verified once, then cached on flask.g)."""
    principal = g.get("principal")
    if not isinstance(principal, Principal):
        principal = g.principal = decode_token(bearer_token())
    return principal


def require_user(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        current_principal()
        return view(*args, **kwargs)

    return wrapper


def acting_for() -> str:
    """The customer a service's token acts for, in a view behind require_service (which admits only tokens that
    name one): the owner of what the view creates or finds."""
    customer = current_principal().customer
    if customer is None:
        raise RuntimeError("acting_for() outside a require_service view")
    return customer


def require_service(*services: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Only the named services, acting for a customer, may call the view: customers get a 403."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_principal()
            if SERVICE_ROLE not in principal.roles or principal.sub not in services or not principal.customer:
                raise Problem(403, "Forbidden", f"This operation is internal: only {', '.join(services)} may call it.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def require_admin(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if "admin" not in current_principal().roles:
            raise Problem(403, "Forbidden", "This endpoint needs a token with the admin role.")
        return view(*args, **kwargs)

    return wrapper
