"""A client for the services' /admin/release endpoints: what `shoplab releases/deploy/rollback`, the responder
and the scenarios read and change releases with. Every failure is a `ReleaseError` saying which service and
why (the service's own problem detail when it answered)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from shoplib.db import parse_timestamp
from shoplib.security import sign_token

TokenSource = Callable[[], str]
TOKEN_TTL_S = 300


class ReleaseError(Exception):
    def __init__(self, service: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.status = status


class ReleaseClient:
    def __init__(self, urls: Mapping[str, str], token: TokenSource, timeout_s: float = 5.0) -> None:
        self.urls = dict(urls)
        self.token = token
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def state(self, service: str) -> dict[str, Any]:
        return self._call(service, "GET", "/admin/release")

    def deploy(self, service: str, version: str, canary_percent: int = 0) -> dict[str, Any]:
        return self._call(service, "PUT", "/admin/release", {"version": version, "canary_percent": canary_percent})

    def promote(self, service: str, reason: str = "") -> dict[str, Any]:
        return self._call(service, "POST", "/admin/release/promote", {"reason": reason[:500]} if reason else None)

    def rollback(self, service: str, reason: str = "") -> dict[str, Any]:
        return self._call(service, "POST", "/admin/release/rollback", {"reason": reason[:500]} if reason else None)

    def _call(self, service: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if service not in self.urls:
            raise ReleaseError(service, f"unknown service; choose from {', '.join(self.urls)}")
        url = self.urls[service] + path
        try:
            response = self.session.request(
                method, url, json=body, headers={"Authorization": f"Bearer {self.token()}"}, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise ReleaseError(service, f"no answer from {url}: {type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not response.ok:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            errors = answer.get("errors") if isinstance(answer, dict) else None
            if errors:
                detail = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
            raise ReleaseError(service, f"{response.status_code} {detail or response.reason}", response.status_code)
        if not isinstance(answer, dict):
            raise ReleaseError(service, f"{url} did not answer a JSON object")
        return answer


def signed_admin_token(sub: str, settings: Mapping[str, Any]) -> TokenSource:
    """Short-lived admin tokens signed with the shop's JWT settings (JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE as a
    service loads them); a new one when half its life is gone."""
    cached: dict[str, Any] = {"token": "", "until": 0.0}

    def token() -> str:
        now = datetime.now(UTC).timestamp()
        if now >= cached["until"]:
            cached["token"] = sign_token(settings, sub, ("admin",), TOKEN_TTL_S)
            cached["until"] = now + TOKEN_TTL_S / 2
        return str(cached["token"])

    return token


def recently_deployed(state: Mapping[str, Any], within: timedelta, now: datetime | None = None) -> str | None:
    """Why the release in a GET /admin/release answer can be rolled back, or None: a canary runs, or the stable
    release replaced another less than `within` ago."""
    canary = state.get("canary")
    if canary:
        return f"canary {canary['version']} on {canary['percent']}% since {canary['since']}"
    previous = state.get("previous")
    if not previous:
        return None
    age = (now or datetime.now(UTC)) - parse_timestamp(state["stable"]["deployed_at"])
    if age > within:
        return None
    return f"{state['stable']['version']} replaced {previous} {age.total_seconds():.0f} s ago"
