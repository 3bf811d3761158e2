"""auth's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

LOGINS = Counter(
    "auth_logins_total",
    "Login attempts by outcome: accepted, rejected (wrong credentials), throttled (429: too many failures from the "
    "username or address) or busy (503: too many logins hashing at once).",
    ["outcome"],
)
LOCKOUTS = Counter(
    "auth_login_lockouts_total", "Locks started by repeated failed logins, by scope: username or address.", ["scope"]
)
for _outcome in ("accepted", "rejected", "throttled", "busy"):
    LOGINS.labels(_outcome)
for _scope in ("username", "address"):
    LOCKOUTS.labels(_scope)
