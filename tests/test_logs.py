"""The stdout JSON lines leave in batches (shoplib.logs.BatchedStreamHandler), in order, none lost: INFO lines
within the interval, warnings and errors at once with everything before them, all of them when the handler closes."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

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
