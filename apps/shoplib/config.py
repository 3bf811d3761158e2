"""Settings read once from the environment at start-up.

Each service declares the variables it reads as `Setting`s; `load` parses them all and reports every
missing or malformed one by name, so a bad deployment fails before it serves a request.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .services import native_url

_REQUIRED = object()
T = TypeVar("T")


class ConfigError(Exception):
    """One or more environment variables are missing or malformed."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: how to parse it and what to use when it is unset.

    `dev_default` is used only when SHOP_ENV=dev (native runs); everywhere else the variable is
    required. Secrets use it so that no deployment can start on a published default.
    """

    name: str
    parse: Callable[[str], Any]
    default: Any = _REQUIRED
    dev_default: Any = _REQUIRED


def integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def number(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {raw.strip()}")
        return value

    return parse


def text(min_length: int = 1, max_length: int = 4096) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not min_length <= len(raw) <= max_length:
            raise ValueError(f"must be {min_length} to {max_length} characters long, got {len(raw)}")
        return raw

    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def cli_argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A parser as an argparse `type=`, its message kept ('--port: must be between 1 and 65535, got 0')."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def exporter_names(raw: str) -> str:
    """An OTEL_*_EXPORTER list; only exporters installed in the image are accepted."""
    names = [name.strip().lower() for name in raw.split(",")]
    unknown = [name for name in names if name not in ("otlp", "otlp_proto_http", "console", "none")]
    if unknown:
        raise ValueError(f"unsupported exporter {', '.join(map(repr, unknown))}; use otlp, console or none")
    return raw


def http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"malformed port in {raw!r}") from None
    return raw.strip().rstrip("/")


def service_url(service: str) -> Setting:
    """`<SERVICE>_URL`: where another service answers (natively, its default port on 127.0.0.1)."""
    return Setting(f"{service.upper()}_URL", http_url, default=native_url(service))


# Settings every service reads.
COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("SHOP_ENV", choice("dev", "prod"), default="prod"),
    Setting("DATA_DIR", text(), default="data"),
    Setting("LOG_LEVEL", choice("debug", "info", "warning", "error"), default="info"),
    # HS256 needs a key of at least 256 bits; PyJWT warns below that. No published default, not even for dev: a
    # native shop gets one generated for its data folder from the supervisor (JWT_SECRET_FILE, <data>/jwt-secret);
    # otherwise a dev process signs with a random key of its own (in-process test apps and their signers agree).
    Setting("JWT_SECRET", text(min_length=32), dev_default=secrets.token_urlsafe(48)),
    Setting("JWT_ISSUER", text(max_length=200), default="shoplab-auth"),
    Setting("JWT_AUDIENCE", text(max_length=200), default="shoplab"),
    Setting("SLOW_QUERY_MS", number(0, 600_000), default=50.0),
    Setting("DB_BUSY_TIMEOUT_MS", integer(0, 600_000), default=5000),
    # The SDK reads these itself (defaults in telemetry.OTEL_DEFAULTS); they are checked here so a
    # typo fails at start, not at the first export.
    Setting("OTEL_TRACES_EXPORTER", exporter_names, default=None),
    Setting("OTEL_LOGS_EXPORTER", exporter_names, default=None),
    Setting("OTEL_EXPORTER_OTLP_PROTOCOL", choice("http/protobuf"), default=None),
)


def read_secret_file(path: str) -> str:
    """A value kept in a file (`<NAME>_FILE`, as Docker secrets are): its text without the final newline."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().removesuffix("\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def raw_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable `name`, or when it is unset or empty the contents of the file `<NAME>_FILE` names; None when
    neither is set. Raises ValueError (naming the file) when that file cannot be read."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if (raw is None or raw == "") and env.get(f"{name}_FILE"):
        return read_secret_file(env[f"{name}_FILE"])
    return raw


def load(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse `settings` (after COMMON_SETTINGS) from `environ`; raise ConfigError naming every bad one. Each may
    instead be read from the file `<NAME>_FILE` names (how compose hands over the generated secrets); the
    variable itself wins when both are set."""
    env = os.environ if environ is None else environ
    dev = env.get("SHOP_ENV", "").strip().lower() == "dev"
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in (*COMMON_SETTINGS, *settings):
        try:
            raw = raw_value(setting.name, env)
        except ValueError as exc:
            problems.append(f"{setting.name}_FILE: {exc}")
            continue
        if raw is None or raw == "":
            if dev and setting.dev_default is not _REQUIRED:
                values[setting.name] = setting.dev_default
            elif setting.default is not _REQUIRED:
                values[setting.name] = setting.default
            else:
                problems.append(f"{setting.name} is required but not set")
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:  # parsers never echo a text() value, so secrets stay out of the message
            problems.append(f"{setting.name}: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))
    return values
