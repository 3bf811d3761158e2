"""How many users to run at each moment of a test: the load shapes' schedules as plain data.

The LoadTestShape classes in _shapes.py only read the clock and ask a Schedule. Nothing here imports Locust
(importing it monkey-patches the process with gevent), so the schedules are tested as plain functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASELINE_SHARE = 0.2  # outside the busy hour the shop sees a fifth of its peak visitors
SPIKE_FACTOR = 1.5  # a campaign e-mail or a flash sale brings half as many again, for a short while
SPIKE_ARRIVAL_S = 5.0  # a spike's visitors all arrive (and later leave) within about five seconds


@dataclass(frozen=True)
class Stage:
    """From the previous stage's end until `until_s`, users go in a straight line from `start_users` to `end_users`."""

    until_s: float
    start_users: int
    end_users: int


@dataclass(frozen=True)
class Schedule:
    """Stages back to back from t = 0, at one spawn rate; after the last stage the test ends (tick returns None)."""

    stages: tuple[Stage, ...]
    spawn_rate: float

    @property
    def duration_s(self) -> float:
        return self.stages[-1].until_s

    def tick(self, run_time_s: float) -> tuple[int, float] | None:
        """(users, spawn rate) at `run_time_s` seconds into the test, or None once it is over."""
        start_s = 0.0
        for stage in self.stages:
            if run_time_s < stage.until_s:
                progress = 0.0 if math.isinf(stage.until_s) else (run_time_s - start_s) / (stage.until_s - start_s)
                users = stage.start_users + (stage.end_users - stage.start_users) * progress
                return round(users), self.spawn_rate
            start_s = stage.until_s
        return None


def spawn_rate_for(top_users: int, steepest_ramp_s: float) -> float:
    """Fast enough for a spike to arrive within SPIKE_ARRIVAL_S and for the steepest ramp never to fall behind
    (Locust's shape worker waits for each change of users to finish before it asks for the next one)."""
    spike_rate = top_users / SPIKE_ARRIVAL_S
    ramp_slope = top_users / steepest_ramp_s
    return float(max(1, math.ceil(max(spike_rate, 2 * ramp_slope))))


def steady(users: int, spawn_rate: float, run_time_s: float | None = None) -> Schedule:
    """The same users all the time: the lab's background load. Without a run time it never ends."""
    until_s = run_time_s if run_time_s else math.inf
    return Schedule((Stage(until_s, users, users),), spawn_rate)


def peak_hour(peak_users: int, duration_s: float) -> Schedule:
    """Quiet start, customers arrive, a busy plateau with two short spikes, they leave, quiet again.

    Shares of `duration_s`: baseline 15 %, ramp up 25 %, peak 40 % (spikes of 3 % each at 50 % and 65 %),
    ramp down 12 %, baseline 8 %.
    """
    baseline = max(1, round(peak_users * BASELINE_SHARE))
    spike = max(peak_users + 1, round(peak_users * SPIKE_FACTOR))
    shares = (
        (0.15, baseline, baseline),
        (0.40, baseline, peak_users),
        (0.50, peak_users, peak_users),
        (0.53, spike, spike),
        (0.65, peak_users, peak_users),
        (0.68, spike, spike),
        (0.80, peak_users, peak_users),
        (0.92, peak_users, baseline),
        (1.00, baseline, baseline),
    )
    # Rounded to the millisecond so that 0.68 * 1000 is 680, not 680.0000000000001.
    stages = tuple(Stage(round(share * duration_s, 3), start, end) for share, start, end in shares)
    return Schedule(stages, spawn_rate_for(spike, steepest_ramp_s=0.12 * duration_s))


def spike(spike_users: int, duration_s: float) -> Schedule:
    """Baseline, then `spike_users` arrive at once and stay for 15 % of the run, then baseline to watch recovery.

    Shares of `duration_s`: baseline 30 %, spike 15 %, baseline 55 %.
    """
    baseline = max(1, round(spike_users * BASELINE_SHARE))
    stages = (
        Stage(round(0.30 * duration_s, 3), baseline, baseline),
        Stage(round(0.45 * duration_s, 3), spike_users, spike_users),
        Stage(duration_s, baseline, baseline),
    )
    return Schedule(stages, spawn_rate_for(spike_users, steepest_ramp_s=math.inf))
