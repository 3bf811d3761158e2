"""Reading an untrusted JSON body (shoplib.api turns it into the operation's model)."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .errors import Problem, ValidationFailed

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
