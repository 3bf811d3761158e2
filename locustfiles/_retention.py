"""Bounded statistics for a Locust master that runs for days: the lab's background load.

Locust keeps, for every request name, a count for each second since the test started, and a chart point every
5 s, and never trims either (locustio/locust#2045). At the lab's steady load that is about 36 MB a day, which
would take the master past its memory limit within two or three days. Only the last few seconds of counts are
ever read (current req/s) and the web UI's charts are for the last hours (Grafana keeps the long view), so
trim() keeps an hour of counts and six hours of chart points. Plain Python, so the tests import it.
"""

from __future__ import annotations

from typing import Any

COUNTS_KEPT_S = 3600
CHART_POINTS_KEPT = 6 * 3600 // 5  # Locust adds one every 5 s


def trim(stats: Any, now: float) -> int:
    """Drop per-second counts older than COUNTS_KEPT_S and chart points beyond CHART_POINTS_KEPT from
    Locust's RequestStats; returns how many items went."""
    oldest_kept = int(now) - COUNTS_KEPT_S
    dropped = 0
    for entry in [stats.total, *stats.entries.values()]:
        for per_second in (entry.num_reqs_per_sec, entry.num_fail_per_sec):
            stale = [second for second in per_second if second < oldest_kept]
            for second in stale:
                del per_second[second]
            dropped += len(stale)
    excess = max(0, len(stats.history) - CHART_POINTS_KEPT)
    del stats.history[:excess]
    return dropped + excess
