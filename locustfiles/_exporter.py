"""Locust's own request counts in Prometheus's text format, served by the master's web UI at /metrics (the lab's
Prometheus scrapes it), so the telemetry dashboard can set what Locust sent beside what Tempo received.

Written by hand rather than with prometheus_client: the pinned locustio/locust image does not have it, and three
series need no library. Counts are Locust's statistics, which start again at 0 with each new run (a counter
reset, which rate() and increase() handle). Plain Python, so the tests import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Sent:
    """One row of Locust's statistics: a request name (the lab's start with the service) and its counts."""

    method: str
    name: str
    requests: int
    failures: int

    @property
    def service(self) -> str:
        return self.name.split(" ", 1)[0]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(rows: Iterable[Sent], users: int) -> str:
    """The text Prometheus scrapes: requests and failures by service, method and name; users running now."""
    lines = [
        "# HELP locust_requests_total Requests Locust sent and got an answer to (or gave up on), by request name.",
        "# TYPE locust_requests_total counter",
    ]
    failures = [
        "# HELP locust_request_failures_total Requests Locust counted as failed, by request name.",
        "# TYPE locust_request_failures_total counter",
    ]
    for row in sorted(rows, key=lambda row: (row.name, row.method)):
        labels = f'service="{_label(row.service)}",method="{_label(row.method)}",name="{_label(row.name)}"'
        lines.append(f"locust_requests_total{{{labels}}} {row.requests}")
        failures.append(f"locust_request_failures_total{{{labels}}} {row.failures}")
    users_lines = [
        "# HELP locust_users Simulated users running now.",
        "# TYPE locust_users gauge",
        f"locust_users {users}",
    ]
    return "\n".join([*lines, *failures, *users_lines]) + "\n"
