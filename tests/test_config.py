"""Settings: every bad variable is reported by name; dev-only defaults stay out of production."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoplib import config
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


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(tmp_path):
    """How compose hands over the generated secrets; the file's final newline is not part of the value."""
    (tmp_path / "jwt").write_text("s" * 40 + "\n")
    assert load((), {"SHOP_ENV": "prod", "JWT_SECRET_FILE": str(tmp_path / "jwt")})["JWT_SECRET"] == "s" * 40


def test_the_variable_itself_wins_over_its_file(tmp_path):
    (tmp_path / "jwt").write_text("f" * 40)
    env = {"SHOP_ENV": "prod", "JWT_SECRET": "v" * 40, "JWT_SECRET_FILE": str(tmp_path / "jwt")}
    assert load((), env)["JWT_SECRET"] == "v" * 40


def test_an_unreadable_or_short_secret_file_is_named_without_its_content(tmp_path):
    with pytest.raises(ConfigError, match=r"JWT_SECRET_FILE: cannot read .*missing: No such file"):
        load((), {"SHOP_ENV": "prod", "JWT_SECRET_FILE": str(tmp_path / "missing")})
    (tmp_path / "short").write_text("tiny-secret")
    with pytest.raises(ConfigError) as error:
        load((), {"SHOP_ENV": "prod", "JWT_SECRET_FILE": str(tmp_path / "short")})
    assert "JWT_SECRET: must be 32 to" in str(error.value) and "tiny-secret" not in str(error.value)


def test_the_dev_jwt_secret_is_written_nowhere_in_the_code():
    """A dev default in the source is a published secret; this one is random, per process (natively the
    supervisor hands every service its data folder's generated secret instead, see test_supervisor)."""
    secret = load((), {"SHOP_ENV": "dev"})["JWT_SECRET"]
    assert len(secret) >= 32 and secret not in Path(config.__file__).read_text()
