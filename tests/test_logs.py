"""The stdout JSON lines leave in batches (shoplib.logs.BatchedStreamHandler), in order, none lost: INFO lines
within the interval, warnings and errors at once with everything before them, all of them when the handler closes.
Each line is what python-json-logger writes for the same record (ShopJsonFormatter writes it in one pass)."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from pythonjsonlogger.json import JsonFormatter

from shop import poll_until
from shoplib.logs import BatchedStreamHandler, ShopJsonFormatter


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, BatchedStreamHandler]]:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream, interval_s=0.3, max_bytes=4096)
    handler.setFormatter(ShopJsonFormatter("catalog"))
    logger = logging.getLogger("test.batched")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_info_lines_are_held_then_written_within_the_interval(logged):
    logger, stream, _handler = logged
    logger.info("first")
    logger.info("second", extra={"route": "/products"})
    assert stream.getvalue() == ""  # one write for both, later
    started = time.monotonic()
    poll_until(lambda: messages(stream) == ["first", "second"], timeout=5, what="the batch")
    assert time.monotonic() - started < 2
    assert json.loads(stream.getvalue().splitlines()[1])["route"] == "/products"


def test_a_warning_is_written_at_once_after_the_lines_before_it(logged):
    logger, stream, _handler = logged
    logger.info("before")
    logger.warning("slow_query")
    assert messages(stream) == ["before", "slow_query"]


def test_a_full_buffer_is_written_without_waiting(logged):
    logger, stream, _handler = logged
    for number in range(40):  # about 6 KB of lines, over max_bytes
        logger.info("filler %d %s", number, "x" * 100)
    assert len(messages(stream)) >= 20


def test_closing_writes_what_is_pending(logged):
    logger, stream, handler = logged
    logger.info("last words")
    handler.close()
    assert messages(stream) == ["last words"]


class LibraryFormatter(ShopJsonFormatter):
    """The same fields through python-json-logger's own format and add_fields: what ShopJsonFormatter must write."""

    def format(self, record: logging.LogRecord) -> str:
        return JsonFormatter.format(self, record)

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        JsonFormatter.add_fields(self, log_record, record, message_dict)
        self.add_context(log_record)


class Unprintable:
    def __repr__(self) -> str:
        return "<unprintable>"


EXTRA_KEYS = st.sampled_from(
    ["method", "status", "duration_ms", "timestamp", "service", "level", "message_x", "_hidden"]
)
EXTRA_VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(b"bytes\xff"),
    st.just(datetime(2026, 11, 24, 5, 30, tzinfo=UTC)),
    st.just(ValueError("boom")),
    st.just(Unprintable()),
)
MESSAGES = st.one_of(
    st.text(max_size=12).filter(lambda text: "%" not in text),
    st.just("%s took %d ms"),
    st.dictionaries(st.sampled_from(["event", "exc_info", "levelname", "stack_info"]), st.text(max_size=5), max_size=3),
)


def made_record(
    message: Any, extras: dict[str, Any], level: int, with_exception: bool, with_stack: bool
) -> logging.LogRecord:
    args = ("GET /products", 3) if message == "%s took %d ms" else ()
    exc_info = None
    if with_exception:
        try:
            raise RuntimeError("failed")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.getLogger("shop.access").makeRecord(
        "shop.access", level, __file__, 1, message, args, exc_info, extra=extras
    )
    record.stack_info = "Stack (most recent call last):\n  here" if with_stack else None
    return record


@settings(max_examples=300, deadline=None)
@given(
    message=MESSAGES,
    extras=st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=5),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    with_exception=st.booleans(),
    with_stack=st.booleans(),
    in_span=st.booleans(),
)
def test_a_line_is_python_json_loggers_character_for_character(
    *, message, extras, level, with_exception, with_stack, in_span
):
    ours, library = ShopJsonFormatter("catalog"), LibraryFormatter("catalog")
    tracer = TracerProvider().get_tracer("test")
    record = made_record(message, extras, level, with_exception, with_stack)
    with tracer.start_as_current_span("request") if in_span else nullcontext():
        assert ours.format(record) == library.format(record)
