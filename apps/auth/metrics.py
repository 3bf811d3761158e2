"""auth's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

LOGINS = Counter("auth_logins_total", "Login attempts by outcome.", ["outcome"])
