"""One JSON object per line on stdout, carrying the active trace and span ids."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from .releases import ReleaseLogFilter
from .telemetry import QueryRedactingLogFilter


class ShopJsonFormatter(JsonFormatter):
    """Adds service and trace context to the JSON line without touching the LogRecord.

    The record is shared with the OTLP handler, which carries trace context natively; adding
    trace_id as a record attribute would send it twice.

    The line is python-json-logger's, character for character (tests/test_logs.py compares them on generated
    records), written in one pass, without its generic path (a dict built through rename and default lookups, a
    datetime encoded through a fresh encoder's fallback): an access line on stdout, in a span, costs 15 µs of CPU
    instead of 19 here.
    """

    def __init__(self, service: str) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )
        self.service = service
        self._encode = JsonEncoder().encode  # the library's encoder (and fallbacks), made once
        self._skip = frozenset(self._skip_fields)

    def format(self, record: logging.LogRecord) -> str:
        """JsonFormatter.format with this formatter's fields: level, logger, message, the message dict, the record's
        extras, timestamp, then service and the active trace and span ids."""
        message_dict: dict[str, Any] = {}
        if isinstance(record.msg, dict):
            message_dict = record.msg.copy()
            record.message = ""
        else:
            record.message = record.getMessage()
        if record.exc_info and not message_dict.get("exc_info"):
            message_dict["exc_info"] = self.formatException(record.exc_info)
        if not message_dict.get("exc_info") and record.exc_text:
            message_dict["exc_info"] = record.exc_text
        if record.stack_info and not message_dict.get("stack_info"):
            message_dict["stack_info"] = self.formatStack(record.stack_info)
        line: dict[Any, Any] = {"level": record.levelname, "logger": record.name, "message": record.message}
        rename, skip = self.rename_fields, self._skip
        for key, value in message_dict.items():
            line[rename.get(key, key)] = value
        for key, value in record.__dict__.items():
            if key not in skip and not (isinstance(key, str) and key.startswith("_")):
                line[rename.get(key, key)] = value
        line["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        self.add_context(line)
        return self._encode(line)

    def add_context(self, line: dict[str, Any]) -> None:
        """The service, and the trace and span ids of the active span if there is one."""
        line["service"] = self.service
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches: every `interval_s`, when `max_bytes` are waiting, at once
    for a record at `flush_level` or above, and when closed (logging.shutdown at exit, after gunicorn's graceful
    stop).

    One write a line, as StreamHandler does, costs a system call with the handler's lock held: 0.1-0.2 ms of CPU a
    line on this lab's 2-vCPU machine into a pipe or a file (bench/overhead.py), and under load the threads queue on
    that lock. A process killed outright loses at most `interval_s` of INFO lines; warnings and errors, the lines
    an incident needs, are never held back."""

    def __init__(
        self,
        stream: TextIO,
        interval_s: float = 0.2,
        max_bytes: int = 64 * 1024,
        flush_level: int = logging.WARNING,
    ) -> None:
        super().__init__(stream)
        self.interval_s, self.max_bytes, self.flush_level = interval_s, max_bytes, flush_level
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._stopped = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every_interval, name="log-flusher", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held (Handler.handle)
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise into the caller
            self.handleError(record)
            return
        self._pending.append(line)
        self._pending_bytes += len(line)
        if record.levelno >= self.flush_level or self._pending_bytes >= self.max_bytes:
            self._write_pending()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text, self._pending, self._pending_bytes = "".join(self._pending), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: the lines have nowhere to go
            pass

    def _flush_every_interval(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.flush()


def configure_logging(service: str, level: str) -> None:
    """Route the root logger to stdout as JSON, in batches (once per process: gunicorn's post_fork)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = BatchedStreamHandler(sys.stdout)
    handler.setFormatter(ShopJsonFormatter(service))
    handler.addFilter(ReleaseLogFilter())
    handler.addFilter(QueryRedactingLogFilter())
    root.addHandler(handler)
    # werkzeug's dev-server access lines duplicate ours.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
