"""The shop's services and the ports they listen on natively, defined once.

Compose publishes each service on the same port of 127.0.0.1, so a native shop and the compose lab are
reached at the same addresses. locustfiles/_settings.py repeats these URLs (the Locust container mounts only
locustfiles/); a test keeps the two in step.
"""

from __future__ import annotations

SERVICES = ("catalog", "checkout", "payment", "auth")
# The incident responder runs beside the shop on the same shared library; it is not one of the shop's services.
RESPONDER = "responder"
DEFAULT_PORTS = {"catalog": 8081, "checkout": 8082, "payment": 8083, "auth": 8084, RESPONDER: 8085}


def native_url(service: str, port: int | None = None) -> str:
    """Where a service answers natively: its default port unless another is given."""
    return f"http://127.0.0.1:{port if port is not None else DEFAULT_PORTS[service]}"
