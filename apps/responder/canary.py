"""Canary analysis: while a service runs a canary, compare the canary's requests with the stable release's
every few seconds (from the `version` label of the RED metrics), promote after enough healthy checks, roll
back after a few failing ones, and record why. It acts before an alert could: a 10% canary that fails 15% of
its requests moves the service's error ratio by about 1.5 points, under what pages."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from incident.backends import BackendError, Backends
from incident.releases import ReleaseClient, ReleaseError
from shoplib.db import parse_timestamp

from .metrics import ACTIONS

_log = logging.getLogger("responder")
MIN_REQUESTS = 10  # canary requests before a check counts either way
ERROR_MARGIN = 0.05  # canary error ratio above stable's by more than this fails a check...
ERROR_FLOOR = 0.005  # ...when that many errors are unlikely (p < 1%) at stable's ratio, or at least this one
SIGNIFICANCE = 0.01
LATENCY_RATIO, LATENCY_FLOOR_S = 2.0, 0.05  # canary p95 above twice stable's and 50 ms more fails a check


@dataclass(frozen=True)
class Verdict:
    state: str  # healthy, failing, or waiting (too few requests yet)
    reason: str


@dataclass(frozen=True)
class Track:
    requests: float = 0.0
    errors: float = 0.0
    p95_s: float | None = None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def judge(canary: Track, stable: Track) -> Verdict:
    """One check of a canary against the stable release over the same window."""
    if canary.requests < MIN_REQUESTS:
        return Verdict("waiting", f"{canary.requests:.0f} canary requests so far; waiting for {MIN_REQUESTS}")
    if canary.error_ratio > stable.error_ratio + ERROR_MARGIN and _unlikely(canary, stable.error_ratio):
        return Verdict(
            "failing",
            f"canary {canary.error_ratio:.1%} server errors vs stable {stable.error_ratio:.1%} "
            f"({canary.errors:.0f} of {canary.requests:.0f})",
        )
    if (
        canary.p95_s is not None
        and stable.p95_s is not None
        and canary.p95_s > LATENCY_RATIO * stable.p95_s
        and canary.p95_s - stable.p95_s > LATENCY_FLOOR_S
    ):
        return Verdict("failing", f"canary p95 {canary.p95_s * 1000:.0f} ms vs stable {stable.p95_s * 1000:.0f} ms")
    return Verdict(
        "healthy",
        f"canary {canary.error_ratio:.1%} errors, stable {stable.error_ratio:.1%}; "
        f"{canary.requests:.0f} canary requests",
    )


def _unlikely(canary: Track, stable_ratio: float) -> bool:
    """Whether the canary's errors would be this many less than 1% of the time at stable's error ratio: the
    binomial tail P(X >= errors) for n = requests. A canary serves few requests, and two failures in twenty
    are a signal where two in two thousand are not."""
    n, k = round(canary.requests), round(canary.errors)
    p = max(stable_ratio, ERROR_FLOOR)
    below = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(min(k, n + 1)))
    return 1 - below < SIGNIFICANCE


def measure(prometheus: Backends, service: str, window_s: int, at: float) -> dict[str, Track]:
    """Requests, 5xx and p95 per version of `service` over the last `window_s`."""
    selector = f'service="{service}"'
    requests = prometheus.query(
        f"sum by (version) (increase(http_request_duration_seconds_count{{{selector}}}[{window_s}s]))", at
    )
    errors = prometheus.query(
        f'sum by (version) (increase(http_request_duration_seconds_count{{{selector},status_code=~"5.."}}'
        f"[{window_s}s]))",
        at,
    )
    p95 = prometheus.query(
        "histogram_quantile(0.95, sum by (le, version) "
        f"(rate(http_request_duration_seconds_bucket{{{selector}}}[{window_s}s])))",
        at,
    )
    tracks: dict[str, Track] = {}
    for sample in requests:
        version = sample.labels.get("version", "")
        tracks[version] = Track(requests=sample.value)
    for sample in errors:
        version = sample.labels.get("version", "")
        if version in tracks:
            tracks[version] = Track(tracks[version].requests, sample.value)
    for sample in p95:
        version = sample.labels.get("version", "")
        if version in tracks:
            tracks[version] = Track(tracks[version].requests, tracks[version].errors, sample.value)
    return tracks


class CanaryAnalyst:
    def __init__(
        self,
        services: Sequence[str],
        releases: ReleaseClient,
        prometheus: Backends,
        *,
        interval_s: float,
        fails_to_roll_back: int,
        passes_to_promote: int,
    ) -> None:
        self.services = tuple(services)
        self.releases = releases
        self.prometheus = prometheus
        self.interval_s = interval_s
        self.fails_to_roll_back = fails_to_roll_back
        self.passes_to_promote = passes_to_promote
        # (service, version, since) -> consecutive failing checks, healthy checks
        self._streaks: dict[tuple[str, str, str], tuple[int, int]] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="canary-analysis", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for service in self.services:
                try:
                    self.check(service)
                except Exception:  # noqa: BLE001 - the loop must outlive one bad check
                    _log.exception("canary_check_failed", extra={"canary_service": service})

    def check(self, service: str) -> str | None:
        """One analysis step for `service`; the decision taken (promote, rollback) or None."""
        try:
            state = self.releases.state(service)
        except ReleaseError as exc:
            _log.info("canary_state_unreadable", extra={"canary_service": service, "reason": exc.reason})
            return None
        canary = state.get("canary")
        if not canary:
            return None
        stable_version, version = state["stable"]["version"], canary["version"]
        key = (service, version, canary["since"])
        since = parse_timestamp(canary["since"]).timestamp()
        now = time.time()
        window_s = int(min(300, max(15, now - since)))
        try:
            tracks = measure(self.prometheus, service, window_s, now)
        except BackendError as exc:
            _log.info("canary_metrics_unreadable", extra={"canary_service": service, "reason": exc.reason})
            return None
        verdict = judge(tracks.get(version, Track()), tracks.get(stable_version, Track()))
        fails, passes = self._streaks.get(key, (0, 0))
        if verdict.state == "failing":
            fails, passes = fails + 1, 0
        elif verdict.state == "healthy":
            fails, passes = 0, passes + 1
        self._streaks[key] = (fails, passes)
        _log.info(
            "canary_check",
            extra={
                "canary_service": service,
                "version": version,
                "state": verdict.state,
                "reason": verdict.reason,
                "failing_in_a_row": fails,
                "healthy_in_a_row": passes,
            },
        )
        if fails >= self.fails_to_roll_back:
            return self._decide(service, version, "rollback", f"{fails} failing checks in a row: {verdict.reason}")
        if passes >= self.passes_to_promote:
            return self._decide(service, version, "promote", f"{passes} healthy checks in a row: {verdict.reason}")
        return None

    def _decide(self, service: str, version: str, action: str, reason: str) -> str:
        try:
            if action == "rollback":
                self.releases.rollback(service, f"canary analysis: {reason}")
            else:
                self.releases.promote(service, f"canary analysis: {reason}")
        except ReleaseError as exc:
            ACTIONS.labels(action, "failed").inc()
            _log.error(
                "canary_action_failed", extra={"canary_service": service, "version": version, "reason": exc.reason}
            )
            return action
        ACTIONS.labels(action, "done").inc()
        message = "canary_rolled_back" if action == "rollback" else "canary_promoted"
        _log.warning(message, extra={"canary_service": service, "version": version, "reason": reason})
        return action
