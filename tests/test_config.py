"""Settings: every bad variable is reported by name; dev-only defaults stay out of production."""

from __future__ import annotations

import pytest

from shoplib.config import ConfigError, Setting, http_url, integer, load


def test_common_settings_have_safe_defaults_in_dev():
    settings = load((), {"SHOP_ENV": "dev"})
    assert settings["SLOW_QUERY_MS"] == 50.0 and len(settings["JWT_SECRET"]) >= 32


def test_every_problem_is_reported_at_once():
    extra = (Setting("WORKERS", integer(1, 8), default=2), Setting("UPSTREAM", http_url))
    with pytest.raises(ConfigError) as error:
        load(extra, {"SHOP_ENV": "prod", "WORKERS": "nine", "DB_BUSY_TIMEOUT_MS": "-1"})
    message = str(error.value)
    for expected in (
        "JWT_SECRET is required",
        "WORKERS: expected a whole number",
        "DB_BUSY_TIMEOUT_MS: must be between",
        "UPSTREAM is required",
    ):
        assert expected in message


@pytest.mark.parametrize("url", ["ftp://x", "http://", "catalog:8080", "http://host:port"])
def test_urls_are_checked(url):
    with pytest.raises(ConfigError, match="UPSTREAM"):
        load((Setting("UPSTREAM", http_url),), {"SHOP_ENV": "dev", "UPSTREAM": url})


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_TRACES_EXPORTER", "jaeger"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("LOG_LEVEL", "loud")],
)
def test_otel_and_log_settings_are_checked_at_start(name, value):
    with pytest.raises(ConfigError, match=name):
        load((), {"SHOP_ENV": "dev", name: value})
