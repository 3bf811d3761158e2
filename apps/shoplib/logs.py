"""One JSON object per line on stdout, carrying the active trace and span ids."""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from .releases import ReleaseLogFilter
from .telemetry import QueryRedactingLogFilter


class ShopJsonFormatter(JsonFormatter):
    """Adds service and trace context to the JSON line without touching the LogRecord.

    The record is shared with the OTLP handler, which carries trace context natively; adding
    trace_id as a record attribute would send it twice.
    """

    def __init__(self, service: str) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )
        self.service = service

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["service"] = self.service
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            log_record["trace_id"] = format(context.trace_id, "032x")
            log_record["span_id"] = format(context.span_id, "016x")


def configure_logging(service: str, level: str) -> None:
    """Route the root logger to stdout as JSON (once per process: gunicorn's post_fork)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ShopJsonFormatter(service))
    handler.addFilter(ReleaseLogFilter())
    handler.addFilter(QueryRedactingLogFilter())
    root.addHandler(handler)
    # werkzeug's dev-server access lines duplicate ours.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
