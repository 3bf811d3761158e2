"""RFC 9457 problem details: every error a service returns is `application/problem+json`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from werkzeug.exceptions import HTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"
_log = logging.getLogger("shop.errors")


class Problem(Exception):
    """An error with an HTTP status that views raise and the error handler renders."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:shoplab:problem:{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body

    def response(self) -> Response:
        return Response(
            json.dumps(self.body()), status=self.status, headers=self.headers, content_type=PROBLEM_CONTENT_TYPE
        )


class ValidationFailed(Problem):
    """400 naming each offending field as `{"field": "items[0].quantity", "message": "..."}`."""

    def __init__(self, errors: list[dict[str, str]], detail: str = "The request has invalid fields.") -> None:
        super().__init__(400, "Validation failed", detail, kind="validation-failed", errors=errors)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="shoplab", error="invalid_token"'}
    )


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        if problem.status >= 500:
            trace.get_current_span().set_status(Status(StatusCode.ERROR, problem.detail))
        return problem.response()

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        allowed = getattr(exc, "valid_methods", None)  # set by 405 Method Not Allowed
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        return Problem(status, exc.name, exc.description or exc.name, headers=headers).response()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        _log.error("unhandled_exception", exc_info=exc, extra={"error_type": type(exc).__name__})
        return Problem(500, "Internal error", "The server hit an unexpected error; it has been logged.").response()
