"""The load's settings, read once from the environment: where the shop is and how hard to push it.

Plain Python (no Locust import, which would monkey-patch the process with gevent), so the tests import it.
Every malformed variable is reported by name before any user starts.

Why its own small parsers and URLs instead of shoplib's: the Locust container mounts only locustfiles/ and
runs the stock Locust image, so shoplib is not there to import. tests/test_load_shapes.py checks that the
defaults below are shoplib's native ports.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Native ports (`make services`, shoplib.services.DEFAULT_PORTS); compose publishes the shop on the same ports.
DEFAULTS = {
    "SHOP_CATALOG_URL": "http://127.0.0.1:8081",
    "SHOP_CHECKOUT_URL": "http://127.0.0.1:8082",
    "SHOP_AUTH_URL": "http://127.0.0.1:8084",
    "SHOP_THINK_TIME_SCALE": "1",
    "SHOP_PEAK_USERS": "120",
    "SHOP_PEAK_DURATION": "20m",
    "SHOP_SPIKE_USERS": "200",
    "SHOP_SPIKE_DURATION": "5m",
}

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class SettingsError(ValueError):
    """One or more SHOP_* variables are malformed; the message names each of them."""


@dataclass(frozen=True)
class Settings:
    catalog_url: str
    checkout_url: str
    auth_url: str
    think_time_scale: float  # multiplies every think time: 0.1 makes each user ten times busier
    peak_users: int
    peak_duration_s: float
    spike_users: int
    spike_duration_s: float


def parse_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"expected a base URL such as http://catalog:8080, got {raw!r}")
    return raw.strip().rstrip("/")


def parse_duration(raw: str) -> float:
    """Seconds from `90`, `90s`, `20m`, `1h` or `1h30m` (Locust's --run-time notation)."""
    text = raw.strip().lower()
    match = _DURATION.fullmatch(text)
    if text.isdigit():
        seconds = int(text)
    elif text and match:
        hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"expected a duration such as 90s, 20m or 1h30m, got {raw!r}")
    if seconds <= 0:
        raise ValueError(f"must be longer than 0 s, got {raw!r}")
    return float(seconds)


def parse_users(raw: str) -> int:
    try:
        users = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number of users, got {raw!r}") from None
    if not 1 <= users <= 100_000:
        raise ValueError(f"must be between 1 and 100000, got {users}")
    return users


def parse_scale(raw: str) -> float:
    try:
        scale = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not 0 <= scale <= 100:
        raise ValueError(f"must be between 0 and 100, got {raw.strip()}")
    return scale


def load(environ: Mapping[str, str]) -> Settings:
    errors: list[str] = []

    def read(name: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(environ.get(name) or DEFAULTS[name])
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
            return None

    settings = Settings(
        catalog_url=read("SHOP_CATALOG_URL", parse_url),
        checkout_url=read("SHOP_CHECKOUT_URL", parse_url),
        auth_url=read("SHOP_AUTH_URL", parse_url),
        think_time_scale=read("SHOP_THINK_TIME_SCALE", parse_scale),
        peak_users=read("SHOP_PEAK_USERS", parse_users),
        peak_duration_s=read("SHOP_PEAK_DURATION", parse_duration),
        spike_users=read("SHOP_SPIKE_USERS", parse_users),
        spike_duration_s=read("SHOP_SPIKE_DURATION", parse_duration),
    )
    if errors:
        raise SettingsError("; ".join(errors))
    return settings


def load_or_exit(environ: Mapping[str, str]) -> Settings:
    """For the locustfiles: one line naming the bad variables, not a traceback from inside Locust's loader."""
    try:
        return load(environ)
    except SettingsError as exc:
        sys.exit(f"shop load: {exc}")
