"""The load shapes: their schedules at given times, their settings, and the real LoadTestShape classes agreeing.

The schedules and settings are plain modules, loaded here from locustfiles/. Locust itself is imported only in a
subprocess: importing it monkey-patches the process with gevent, which must never happen inside pytest.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest

from shop import REPO, python
from shop import load_locustfile_module as load_module
from shoplib.services import native_url

LOCUSTFILES = REPO / "locustfiles"
schedules = load_module("_schedules")
settings = load_module("_settings")

# A peak hour of 1,000 s with 100 users at the peak: baseline 20, spikes 150, spawn rate 150 / 5 s = 30.
PEAK_HOUR_AT = [
    (0, 20),
    (149, 20),  # quiet start: 15 %
    (150, 20),  # the ramp begins
    (275, 60),  # half-way up
    (400, 100),  # the peak
    (499, 100),
    (500, 150),  # first spike: 50-53 %
    (529, 150),
    (530, 100),
    (649, 100),
    (650, 150),  # second spike: 65-68 %
    (680, 100),
    (799, 100),
    (860, 60),  # half-way down
    (920, 20),  # baseline again for the last 8 %
    (999, 20),
]


@pytest.mark.parametrize(("second", "users"), PEAK_HOUR_AT)
def test_peak_hour_at_given_times(second, users):
    assert schedules.peak_hour(100, 1000).tick(second) == (users, 30.0)


@pytest.mark.parametrize("second", [1000, 1000.5, 86_400])
def test_peak_hour_ends_after_its_duration(second):
    assert schedules.peak_hour(100, 1000).tick(second) is None


@pytest.mark.parametrize(
    ("peak", "baseline", "spike"),
    [(1, 1, 2), (3, 1, 4), (10, 2, 15), (40, 8, 60), (1000, 200, 1500)],
)
def test_peak_hour_baseline_and_spikes_scale_with_the_peak(peak, baseline, spike):
    plan = schedules.peak_hour(peak, 600)
    assert plan.tick(0)[0] == baseline
    assert plan.tick(0.45 * 600)[0] == peak
    assert plan.tick(0.51 * 600)[0] == spike
    assert plan.tick(0.99 * 600)[0] == baseline


@pytest.mark.parametrize(("peak", "duration_s"), [(40, 1200), (100, 3600), (16, 24), (500, 300), (2, 10)])
def test_the_spawn_rate_keeps_up_with_every_ramp_and_spike(peak, duration_s):
    """Locust's shape worker waits for each change of users to finish before it asks for the next one: a ramp
    step that took longer than a second would stretch the schedule, and a spike must arrive at once."""
    plan = schedules.peak_hour(peak, duration_s)
    for ramp in ((0.15, 0.40), (0.80, 0.92)):
        seconds = range(math.ceil(ramp[0] * duration_s), math.floor(ramp[1] * duration_s))
        users = [plan.tick(second)[0] for second in seconds]
        assert users, "the ramp lasts at least a second"
        assert all(abs(after - before) <= plan.spawn_rate for before, after in itertools.pairwise(users))
    spike = plan.tick(0.51 * duration_s)[0]
    assert (spike - peak) / plan.spawn_rate <= schedules.SPIKE_ARRIVAL_S


def test_steady_never_ends_without_a_run_time():
    plan = schedules.steady(10, 2)
    assert [plan.tick(second) for second in (0, 59, 3600, 10**9)] == [(10, 2)] * 4


def test_steady_with_a_run_time_ends_on_time():
    plan = schedules.steady(10, 2, 60)
    assert plan.tick(59.9) == (10, 2)
    assert plan.tick(60) is None


@pytest.mark.parametrize(
    ("second", "expected"),
    [(0, (10, 10.0)), (29, (10, 10.0)), (30, (50, 10.0)), (44, (50, 10.0)), (45, (10, 10.0)), (99, (10, 10.0))],
)
def test_spike_at_given_times(second, expected):
    # 50 users arrive within 5 s (spawn rate 10) after 30 % of the run and stay for 15 %; baseline a fifth.
    assert schedules.spike(50, 100).tick(second) == expected


def test_spike_ends_after_its_duration():
    assert schedules.spike(50, 100).tick(100) is None


def test_settings_default_to_the_native_shop():
    loaded = settings.load({})
    # locustfiles/ cannot import shoplib in its container; its defaults must still be shoplib's ports.
    assert (loaded.catalog_url, loaded.checkout_url, loaded.auth_url) == (
        native_url("catalog"),
        native_url("checkout"),
        native_url("auth"),
    )
    assert loaded.think_time_scale == 1.0
    assert (loaded.peak_users, loaded.peak_duration_s) == (120, 1200.0)
    assert (loaded.spike_users, loaded.spike_duration_s) == (200, 300.0)


def test_settings_read_compose_urls_and_scales():
    loaded = settings.load(
        {
            "SHOP_CATALOG_URL": "http://catalog:8080/",
            "SHOP_CHECKOUT_URL": "http://checkout:8080",
            "SHOP_AUTH_URL": "https://auth.example:8443",
            "SHOP_THINK_TIME_SCALE": "0.1",
            "SHOP_PEAK_USERS": "200",
            "SHOP_PEAK_DURATION": "1h",
        }
    )
    assert loaded.catalog_url == "http://catalog:8080"
    assert loaded.auth_url == "https://auth.example:8443"
    assert (loaded.think_time_scale, loaded.peak_users, loaded.peak_duration_s) == (0.1, 200, 3600.0)


@pytest.mark.parametrize(("raw", "seconds"), [("90", 90), ("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400)])
def test_durations_use_locusts_notation(raw, seconds):
    assert settings.parse_duration(raw) == seconds


def test_every_malformed_setting_is_named():
    with pytest.raises(settings.SettingsError) as raised:
        settings.load(
            {
                "SHOP_CATALOG_URL": "catalog:8080",
                "SHOP_PEAK_USERS": "0",
                "SHOP_PEAK_DURATION": "soon",
                "SHOP_SPIKE_DURATION": "0s",
                "SHOP_THINK_TIME_SCALE": "-1",
            }
        )
    message = str(raised.value)
    for name in (
        "SHOP_CATALOG_URL",
        "SHOP_PEAK_USERS",
        "SHOP_PEAK_DURATION",
        "SHOP_SPIKE_DURATION",
        "SHOP_THINK_TIME_SCALE",
    ):
        assert name in message
    assert "SHOP_AUTH_URL" not in message


# Runs in a subprocess (Locust's import patches the process): every shape class's tick() at each time,
# with the clock stubbed and, for Steady, the options the web UI or -u/-r/-t would set.
TICKS = """
import json, sys
from types import SimpleNamespace
import _shapes as shapes

options = SimpleNamespace(num_users=7, spawn_rate=3.0, run_time=100)
result = {}
for shape_class in shapes.SHAPES:
    shape = shape_class()
    shape.runner = SimpleNamespace(environment=SimpleNamespace(parsed_options=options))
    result[shape_class.__name__] = []
    for second in json.loads(sys.argv[1]):
        shape.get_run_time = lambda second=second: second
        result[shape_class.__name__].append(shape.tick())
print(json.dumps(result))
"""


@pytest.mark.integration
def test_the_locust_shapes_tick_as_their_schedules_say():
    seconds = [0, 30, 99, 150, 275, 500, 650, 860, 999, 1000]
    env = {
        "PYTHONPATH": str(LOCUSTFILES),
        "SHOP_PEAK_USERS": "100",
        "SHOP_PEAK_DURATION": "1000s",
        "SHOP_SPIKE_USERS": "50",
        "SHOP_SPIKE_DURATION": "100",
    }
    result = python("-c", TICKS, json.dumps(seconds), env=env)
    assert result.returncode == 0, result.stderr
    ticks = json.loads(result.stdout)

    def expected(plan):
        return [list(tick) if tick else None for tick in map(plan.tick, seconds)]

    assert ticks == {
        "Steady": expected(schedules.steady(7, 3.0, 100)),
        "PeakHourShape": expected(schedules.peak_hour(100, 1000)),
        "Spike": expected(schedules.spike(50, 100)),
    }
    assert ticks["PeakHourShape"][3:7] == [[20, 30.0], [60, 30.0], [150, 30.0], [150, 30.0]]
