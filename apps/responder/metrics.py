"""The responder's own instruments (the shared RED metrics are in shoplib.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ACTIONS = Counter(
    "responder_actions_total",
    "What the responder did about an incident or a canary: action rollback, promote, suggest or none; outcome "
    "done, failed or skipped.",
    ["action", "outcome"],
)
# Every pair exists from the start, so increase() sees the first of each.
for _action in ("rollback", "promote", "suggest", "none"):
    for _outcome in ("done", "failed", "skipped"):
        ACTIONS.labels(_action, _outcome)
INCIDENTS_OPEN = Gauge("responder_incidents_open", "Incidents whose page alert is still firing.")
