"""Load shapes: Steady (the lab's background load), PeakHourShape and Spike.

Choose one in the web UI's shape picker (Locust started with --class-picker) or on the command line with
`--shape NAME` (or LOCUST_SHAPE=NAME); Steady is the default. Each tick() only reads the clock and asks its
schedule (_schedules.py), so what a shape does at any second is tested without Locust.

- Steady: -u users, spawned at -r per second, for -t (forever without it); the web UI's fields set the same.
- PeakHourShape: SHOP_PEAK_USERS at the peak over SHOP_PEAK_DURATION (default 120 users, 20m).
- Spike: SHOP_SPIKE_USERS arrive at once, over SHOP_SPIKE_DURATION (default 200 users, 5m).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import _schedules as schedules
import _settings as settings
from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

_log = logging.getLogger("shapes")

SETTINGS = settings.load_or_exit(os.environ)


class Steady(LoadTestShape):
    # Reads -u, -r and -t, so the web UI shows (and applies) its user count, ramp-up and run time fields.
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None  # set before ticks
        options = self.runner.environment.parsed_options
        schedule = schedules.steady(options.num_users or 1, options.spawn_rate or 1, options.run_time)
        return schedule.tick(self.get_run_time())


class PeakHourShape(LoadTestShape):
    schedule = schedules.peak_hour(SETTINGS.peak_users, SETTINGS.peak_duration_s)

    def tick(self) -> tuple[int, float] | None:
        return self.schedule.tick(self.get_run_time())


class Spike(LoadTestShape):
    schedule = schedules.spike(SETTINGS.spike_users, SETTINGS.spike_duration_s)

    def tick(self) -> tuple[int, float] | None:
        return self.schedule.tick(self.get_run_time())


SHAPES = (Steady, PeakHourShape, Spike)


@events.init_command_line_parser.add_listener
def add_shape_option(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--shape",
        choices=[shape.__name__ for shape in SHAPES],
        default=Steady.__name__,
        env_var="LOCUST_SHAPE",
        include_in_web_ui=False,  # the web UI has its own picker (--class-picker)
        help="load shape to run (default Steady: -u users at -r per second for -t)",
    )


@events.init.add_listener
def use_chosen_shape(environment: Environment, **_kwargs: Any) -> None:
    """Locust would run the first shape it finds; run the one --shape names instead."""
    options = environment.parsed_options
    if options is None or options.worker:  # only the master (or a standalone run) drives a shape
        return
    shape = (environment.available_shape_classes or {}).get(options.shape)
    if shape is None:  # a locustfile that does not offer the shop's shapes
        return
    shape.runner = environment.runner
    environment.shape_class = shape
    schedule = getattr(shape, "schedule", None)
    if schedule is not None:
        _log.info("shape %s: %d stages over %.0f s", options.shape, len(schedule.stages), schedule.duration_s)
        if options.num_users or options.run_time:
            _log.warning("--shape %s sets its own users and run time: -u, -r and -t are ignored", options.shape)
