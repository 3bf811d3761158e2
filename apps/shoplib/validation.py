"""Reading untrusted JSON bodies and query strings into typed values, collecting every field error."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request

from .errors import Problem, ValidationFailed

_MISSING = object()
MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id cannot exist and must not reach the driver


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx problem saying why it is not one."""
    if not request.is_json:
        raise Problem(415, "Unsupported media type", "Send the body as application/json.")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError covers malformed JSON, bad UTF-8, NaN/Infinity and integers too long to parse.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply or malformed"
        raise Problem(400, "Malformed JSON", f"The body is not valid JSON: {reason}.", kind="malformed-json") from None
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "", "message": "the body must be a JSON object"}])
    return body


class Fields:
    """Collects field errors while reading values, so one response lists every problem."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)

    def _take(self, obj: dict[str, Any], key: str, field: str, required: bool) -> Any:
        value = obj.get(key, _MISSING)
        if value is None and not required:
            return _MISSING
        if value is _MISSING and required:
            self.fail(field, "is required")
        return value

    @staticmethod
    def _name(at: str, key: str) -> str:
        return f"{at}.{key}" if at else key

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        *,
        at: str = "",
        min_length: int = 1,
        max_length: int = 200,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
        required: bool = True,
    ) -> str | None:
        field = self._name(at, key)
        value = self._take(obj, key, field, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.fail(field, "must be a string")
        elif not min_length <= len(value) <= max_length:
            self.fail(field, f"must be {min_length} to {max_length} characters long")
        elif pattern is not None and not pattern.fullmatch(value):
            self.fail(field, hint or f"must match {pattern.pattern}")
        else:
            return value
        return None

    def integer(
        self, obj: dict[str, Any], key: str, *, at: str = "", minimum: int, maximum: int, required: bool = True
    ) -> int | None:
        field = self._name(at, key)
        value = self._take(obj, key, field, required)
        if value is _MISSING:
            return None
        # bool is an int subclass in Python; JSON true is not a quantity.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be a whole number")
        elif not minimum <= value <= maximum:
            self.fail(field, f"must be between {minimum} and {maximum}")
        else:
            return value
        return None

    def number(
        self, obj: dict[str, Any], key: str, *, at: str = "", minimum: float, maximum: float, required: bool = True
    ) -> float | None:
        field = self._name(at, key)
        value = self._take(obj, key, field, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, "must be a number")
        elif not math.isfinite(value) or not minimum <= value <= maximum:
            self.fail(field, f"must be between {minimum} and {maximum}")
        else:
            return float(value)
        return None

    def object(self, obj: dict[str, Any], key: str, *, at: str = "", required: bool = True) -> dict[str, Any] | None:
        field = self._name(at, key)
        value = self._take(obj, key, field, required)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(field, "must be an object")
            return None
        return value

    def array(
        self, obj: dict[str, Any], key: str, *, at: str = "", min_items: int = 1, max_items: int = 100
    ) -> list[Any] | None:
        field = self._name(at, key)
        value = self._take(obj, key, field, True)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.fail(field, "must be an array")
        elif not min_items <= len(value) <= max_items:
            self.fail(field, f"must hold {min_items} to {max_items} entries")
        else:
            return value
        return None


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter, or a 400 problem naming it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed([{"field": name, "message": "must be a whole number"}]) from None
    if not minimum <= value <= maximum:
        raise ValidationFailed([{"field": name, "message": f"must be between {minimum} and {maximum}"}])
    return value


def query_text(name: str, max_length: int = 100) -> str:
    raw = request.args.get(name, "")
    if len(raw) > max_length:
        raise ValidationFailed([{"field": name, "message": f"must be at most {max_length} characters long"}])
    return raw.strip()
