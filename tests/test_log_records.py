"""shoplib.log_records exports what opentelemetry's LoggingHandler and the SDK export: the same logging records,
handled by both handlers, give the same OTLP message (the SDK's own encoder) and the same dropped counts, for records
hypothesis makes up."""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import nullcontext
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.instrumentation.logging import handler as handler_module
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk._logs._internal import LogRecordDroppedAttributesWarning
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from shoplib.log_records import RecordedLogRecord, RecordingLogHandler

KEYS = st.sampled_from(["method", "status", "a", "b"])
# The event name leaves the attributes for its own field, which holds a string only (the SDK's encoder fails on more).
EVENT_NAMES = st.dictionaries(st.sampled_from(["otel.event.name", "event.name"]), st.text(max_size=5), max_size=2)
VALUES = st.one_of(
    st.text(max_size=6),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
    st.dictionaries(st.sampled_from(["k", ""]), st.text(max_size=4), max_size=2),
    st.just(object()),  # not an attribute value: the SDK writes its str or drops it
)
LIMITS = st.sampled_from(
    [
        LogRecordLimits(),
        LogRecordLimits(max_attributes=2),
        LogRecordLimits(max_attribute_length=3),
        LogRecordLimits(max_attributes=0),
    ]
)


def pipeline(limits: LogRecordLimits, handler_class: type[logging.Handler]) -> tuple[Any, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "catalog"}), log_record_limits=limits)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return handler_class(logger_provider=provider), exporter


def made_record(message: str, extras: dict[str, Any], level: int, with_exception: bool) -> logging.LogRecord:
    exc_info = None
    if with_exception:
        try:
            raise KeyError("product")
        except KeyError:
            exc_info = sys.exc_info()
    return logging.getLogger("shop.access").makeRecord(
        "shop.access", level, __file__, 1, message, (), exc_info, extra=extras
    )


@settings(max_examples=300, deadline=None)
@given(
    message=st.text(max_size=10).filter(lambda text: "%" not in text),
    extras=st.dictionaries(KEYS, VALUES, max_size=5),
    event_names=EVENT_NAMES,
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]),
    with_exception=st.booleans(),
    in_span=st.booleans(),
    limits=LIMITS,
)
def test_a_record_exports_as_the_sdks(*, message, extras, event_names, level, with_exception, in_span, limits):
    sdk_handler, sdk_exported = pipeline(limits, LoggingHandler)
    handler, exported = pipeline(limits, RecordingLogHandler)
    tracer = TracerProvider().get_tracer("test")
    extras |= event_names
    with (
        patch.object(handler_module, "time_ns", lambda: 1_700_000_000_000_000_000),  # the observed time
        warnings.catch_warnings(),
        tracer.start_as_current_span("request") if in_span else nullcontext(),
    ):
        warnings.simplefilter("ignore", LogRecordDroppedAttributesWarning)
        # Each handler gets a record of its own: the SDK's translation keeps the record's values, not copies.
        sdk_handler.handle(made_record(message, dict(extras), level, with_exception))
        handler.handle(made_record(message, dict(extras), level, with_exception))
    expected, written = sdk_exported.get_finished_logs(), exported.get_finished_logs()
    assert [type(record) for record in written] == [type(record) for record in expected]
    assert len(written) == 1
    # Creation times differ by the moment each record was made; the SDK writes them as given.
    written[0].log_record.timestamp = expected[0].log_record.timestamp
    assert encode_logs(written) == encode_logs(expected)
    assert [r.dropped_attributes for r in written] == [r.dropped_attributes for r in expected]


def test_dropped_attributes_warn_as_the_sdks():
    handler, exported = pipeline(LogRecordLimits(max_attributes=1), RecordingLogHandler)
    with pytest.warns(LogRecordDroppedAttributesWarning):
        handler.handle(made_record("request", {"method": "GET", "status": 200}, logging.INFO, False))
    (record,) = exported.get_finished_logs()
    assert record.dropped_attributes == 1
    assert dict(record.log_record.attributes or {}) == {"status": 200}


def test_processors_get_recorded_records_and_a_shut_down_provider_gets_none():
    handler, exported = pipeline(LogRecordLimits(), RecordingLogHandler)
    received: list[Any] = []
    provider = handler._logger_provider
    provider.add_log_record_processor(_Received(received))
    handler.handle(made_record("request", {"method": "GET"}, logging.INFO, False))
    assert [type(record) for record in received] == [RecordedLogRecord]
    assert dict(received[0].log_record.attributes) == {"method": "GET"}
    assert len(exported.get_finished_logs()) == 1

    provider.shutdown()
    handler.handle(made_record("request", {"method": "GET"}, logging.INFO, False))  # after shutdown: dropped, no error
    assert len(exported.get_finished_logs()) == 1


class _Received(LogRecordProcessor):
    """Keeps what the logger emitted to its processors, as they get it."""

    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def on_emit(self, log_record: Any) -> None:
        self.into.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
