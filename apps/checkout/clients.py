"""HTTP calls to auth, catalog and payment. Trace context rides on every call (shoplib.telemetry.traced_send)."""

from __future__ import annotations

import time
from typing import Any

import requests
from opentelemetry.instrumentation.utils import suppress_instrumentation

from shoplib.errors import Problem, unauthorized
from shoplib.metrics import request_route, trace_exemplar
from shoplib.security import Principal

from .metrics import DEPENDENCY_CALLS


class Downstream:
    """One dependency; connection failures and timeouts become 503/504 problems naming it."""

    def __init__(self, name: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.session = requests.Session()
        # Calls between the shop's services never go through a proxy or use ~/.netrc. With trust_env on, requests
        # looks both up on every call (scanning the environment, stat-ing files): a quarter of checkout's Python
        # time in a profile under load (bench/overhead.py).
        self.session.trust_env = False

    def call(self, method: str, path: str, *, bearer: str, json: Any = None) -> requests.Response:
        """One call; connection failures, timeouts and answers cut off become 503/504/502 problems naming the
        dependency. Timed per
        route being served, so an alert on that route can name the dependency that made it slow or fail."""
        started = time.perf_counter()
        outcome = "unreachable"
        try:
            response = self._call(method, path, bearer, json)
            outcome = str(response.status_code)
            return response
        except Problem as problem:
            outcome = {504: "timeout", 502: "cut_off"}.get(problem.status, "unreachable")
            raise
        finally:
            caller_method, caller_route = request_route()
            DEPENDENCY_CALLS.labels("checkout", caller_method, caller_route, self.name, outcome).observe(
                time.perf_counter() - started, exemplar=trace_exemplar()
            )

    def _call(self, method: str, path: str, bearer: str, json: Any) -> requests.Response:
        try:
            try:
                return self._send(method, path, bearer, json)
            except requests.ConnectionError as exc:
                if isinstance(exc, requests.Timeout):
                    raise
                # Failed before any answer, e.g. on a kept-alive connection the server had just closed
                # (gunicorn closes idle ones after 5 s). Sending it once more is safe: every call checkout
                # makes is idempotent (a reservation's reference, one payment per order). A timeout is never
                # resent: the other side may still be working on it.
                return self._send(method, path, bearer, json)
        except requests.Timeout:
            raise Problem(
                504,
                "Dependency timeout",
                f"{self.name} did not answer within {self.timeout_s} s.",
                kind="dependency-timeout",
                dependency=self.name,
            ) from None
        except requests.ConnectionError:
            raise Problem(
                503,
                "Dependency unavailable",
                f"{self.name} could not be reached.",
                kind="dependency-unavailable",
                dependency=self.name,
            ) from None
        except requests.RequestException:
            # The answer broke off midway (the dependency died while sending it, e.g. ChunkedEncodingError): it may
            # have acted, so, as after a timeout, nothing is resent and the caller treats the outcome as unknown.
            raise Problem(
                502,
                "Dependency error",
                f"{self.name}'s answer was cut off.",
                kind="dependency-cut-off",
                dependency=self.name,
            ) from None

    def _send(self, method: str, path: str, bearer: str, json: Any) -> requests.Response:
        return self.session.request(
            method,
            self.base_url + path,
            json=json,
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=self.timeout_s,
        )

    def check_alive(self) -> None:
        """For /readyz: probes are not traced, or every healthcheck would become a trace."""
        with suppress_instrumentation():
            response = self.session.get(self.base_url + "/healthz", timeout=1.0)
        response.raise_for_status()


def failed(dependency: Downstream, response: requests.Response) -> Problem:
    """A dependency answered with an error we cannot pass on as the client's fault."""
    return Problem(
        502,
        "Dependency error",
        f"{dependency.name} answered {response.status_code}.",
        kind="dependency-error",
        dependency=dependency.name,
    )


def problem_from(response: requests.Response) -> Problem:
    """Re-raise a dependency's 4xx problem as ours, keeping its title, detail and extra members."""
    body = response.json()
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "errors")}
    return Problem(
        response.status_code,
        body.get("title", "Error"),
        body.get("detail", ""),
        kind=body.get("type", "").rsplit(":", 1)[-1] or None,
        errors=body.get("errors"),
        **extra,
    )


class Auth(Downstream):
    def verify(self, bearer: str) -> Principal:
        response = self.call("GET", "/verify", bearer=bearer)
        if response.status_code == 401:
            raise unauthorized(response.json().get("detail", "The bearer token is not valid."))
        if response.status_code != 200:
            raise failed(self, response)
        body = response.json()
        return Principal(sub=body["sub"], roles=tuple(body["roles"]), expires_at=body["expires_at"])
