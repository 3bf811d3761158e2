"""shoplib.spans records what the SDK records: the same operations on a span, through the SDK's Tracer and through a
RecordingTracer, export the same OTLP message (the SDK's own encoder), for operations hypothesis makes up."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, AlwaysRecordSampler, ParentBased, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from shoplib import releases
from shoplib import spans as shop_spans
from shoplib.releases import ReleaseSpanProcessor
from shoplib.spans import RecordingSpan, RecordingTracer, record_lightly
from shoplib.telemetry import REDACTED, QueryRedactingSpanProcessor

ALWAYS_RECORD = AlwaysRecordSampler(ParentBased(ALWAYS_OFF))  # records without sampling: RECORD_ONLY
KEYS = st.sampled_from(["a", "b", "c", "d", "http.target", ""])  # few keys: overwrites and the count limit happen
VALUES = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=4), max_size=3),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
    st.none(),  # invalid: dropped
    st.just({"nested": 1}),  # a mapping: not a span attribute value, dropped with a warning
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=5)
TIMES = st.integers(min_value=1, max_value=2**62)
OPERATION = st.one_of(
    st.tuples(st.just("set_attribute"), KEYS, VALUES),
    st.tuples(st.just("set_attributes"), ATTRIBUTES),
    st.tuples(st.just("update_name"), st.text(max_size=10)),
    st.tuples(st.just("add_event"), st.text(max_size=6), ATTRIBUTES, TIMES),
    st.tuples(st.just("add_link"), st.integers(min_value=1, max_value=2**64 - 1), ATTRIBUTES),
    st.tuples(
        st.just("set_status"),
        st.sampled_from(
            [Status(StatusCode.OK), Status(StatusCode.ERROR, "boom"), Status(StatusCode.UNSET), StatusCode.ERROR]
        ),
    ),
    st.tuples(st.just("record_exception"), st.sampled_from([ValueError("bad"), KeyError("k")]), TIMES),
)
SCRIPT = st.fixed_dictionaries(
    {
        "name": st.text(max_size=10),
        "kind": st.sampled_from(list(SpanKind)),
        "attributes": ATTRIBUTES,
        # trace id, remote or local, sampled or not, the trace state it carries
        "parent": st.none()
        | st.tuples(
            st.integers(min_value=0, max_value=2**128 - 1),  # 0: an invalid parent, a root span then
            st.booleans(),
            st.booleans(),
            st.sampled_from([TraceState(), TraceState([("shop", "a1")])]),
        ),
        "before_end": st.lists(OPERATION, max_size=8),
        "after_end": st.lists(OPERATION, max_size=2),  # ignored by both: the span has ended
        "start": TIMES,
        # None: the SDK's default, ParentBased(ALWAYS_ON), which a RecordingTracer decides itself; the others it asks
        "sampler": st.sampled_from([None, ParentBased(ALWAYS_ON), ParentBased(ALWAYS_OFF), ALWAYS_RECORD]),
        "limits": st.sampled_from(
            [SpanLimits(), SpanLimits(max_span_attributes=2, max_span_attribute_length=3, max_events=1)]
        ),
    }
)


class CountingIds(IdGenerator):
    """The same ids, in the same order, for both tracers."""

    def __init__(self) -> None:
        self.next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self.next)

    def generate_trace_id(self) -> int:
        return next(self.next) << 64


def provider(
    recording: bool, limits: SpanLimits, sampler: Sampler | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    made = TracerProvider(
        resource=Resource.create({"service.name": "catalog"}),
        id_generator=CountingIds(),
        span_limits=limits,
        sampler=sampler,
    )
    if recording:
        record_lightly(made)
    made.add_span_processor(SimpleSpanProcessor(exporter))
    return made, exporter


def apply(span: trace.Span, operation: tuple[Any, ...]) -> None:
    name, *arguments = operation
    if name == "add_link":
        (span_id, attributes) = arguments
        span.add_link(SpanContext(span_id << 64, span_id, False, TraceFlags(TraceFlags.SAMPLED)), attributes)
    elif name == "record_exception":
        error, timestamp = arguments
        span.record_exception(error, timestamp=timestamp)
    elif name == "add_event":
        event, attributes, timestamp = arguments
        span.add_event(event, attributes, timestamp)
    else:
        getattr(span, name)(*arguments)


def run(script: dict[str, Any], recording: bool) -> Any:
    made, exporter = provider(recording, script["limits"], script["sampler"])
    context = None
    if script["parent"]:
        trace_id, remote, sampled, state = script["parent"]
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        context = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, 7, remote, flags, state)))
    span = made.get_tracer("shop", "1.0").start_span(
        script["name"], context, script["kind"], script["attributes"], start_time=script["start"]
    )
    for operation in script["before_end"]:
        apply(span, operation)
    span.end(end_time=script["start"] + 1000)
    for operation in script["after_end"]:
        apply(span, operation)
    span.end()  # a second end changes nothing
    finished = exporter.get_finished_spans()
    return finished, encode_spans(finished), (span.is_recording(), span.get_span_context())


@settings(max_examples=300, deadline=None)
@given(SCRIPT)
def test_a_recording_span_exports_what_the_sdks_span_exports(script):
    sdk_spans, sdk_message, sdk_started = run(script, recording=False)
    spans, message, started = run(script, recording=True)
    assert started == sdk_started  # recording or not, ids, flags and trace state
    assert all(isinstance(span, RecordingSpan) for span in spans)
    assert message == sdk_message
    assert [s.dropped_attributes for s in spans] == [s.dropped_attributes for s in sdk_spans]


class Interrupted(BaseException):
    """Not an error (as KeyboardInterrupt): the SDK ends the span without recording it."""


def run_with_block(arguments: dict[str, Any], raised: BaseException | None, recording: bool) -> Any:
    """`with tracer.start_as_current_span(...)` around a block that raises `raised` (or nothing), as a step of the
    shop's does; the exported span (its exception event's stack trace left out: the frames differ), what was current
    inside and after, and what escaped."""
    made, exporter = provider(recording, SpanLimits(), arguments.pop("sampler"))
    tracer = made.get_tracer("shop")
    inside = escaped = None
    clock = itertools.count(1000).__next__  # the same start, end and event times for both
    with mock.patch.object(sdk_trace, "time_ns", clock), mock.patch.object(shop_spans, "time_ns", clock):
        try:
            with tracer.start_as_current_span("step", **arguments) as span:
                inside = trace.get_current_span() is span
                if raised is not None:
                    raise raised
        except BaseException as error:  # noqa: BLE001 - whatever escaped is compared
            escaped = error
        after = trace.get_current_span() is span
        if not arguments["end_on_exit"]:
            span.end()
    finished = exporter.get_finished_spans()
    message = encode_spans(finished)
    for resource in message.resource_spans:
        for scope in resource.scope_spans:
            for exported in scope.spans:
                for event in exported.events:
                    kept = [kv for kv in event.attributes if kv.key != "exception.stacktrace"]
                    del event.attributes[:]
                    event.attributes.extend(kept)
    return message, inside, after, escaped, span.is_recording()


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(list(SpanKind)),
            "attributes": ATTRIBUTES,
            "record_exception": st.booleans(),
            "set_status_on_exception": st.booleans(),
            "end_on_exit": st.booleans(),
            "sampler": st.sampled_from([None, ParentBased(ALWAYS_OFF)]),
        }
    ),
    st.sampled_from([None, RuntimeError("down"), KeyError("k"), Interrupted()]),
)
def test_start_as_current_span_does_what_the_sdks_does(arguments, raised):
    sdk = run_with_block(dict(arguments), raised, recording=False)
    shop = run_with_block(dict(arguments), raised, recording=True)
    assert shop == sdk
    assert shop[1:4] == (True, False, raised)  # current inside, not after; what was raised escapes, unchanged


def test_start_as_current_span_as_a_decorator_starts_a_span_per_call():
    made, exporter = provider(True, SpanLimits())
    tracer = made.get_tracer("shop")

    @tracer.start_as_current_span("step", attributes={"a": 1})
    def step(value: int) -> int:
        assert trace.get_current_span().is_recording()
        return value * 2

    assert step(2) == 4
    assert step(3) == 6
    assert [(span.name, dict(span.attributes)) for span in exporter.get_finished_spans()] == [("step", {"a": 1})] * 2


def test_an_unsampled_trace_records_nothing():
    made, exporter = provider(True, SpanLimits(), ParentBased(ALWAYS_OFF))
    tracer = made.get_tracer("shop")
    span = tracer.start_span("not kept")
    assert not span.is_recording()
    assert not span.get_span_context().trace_flags.sampled
    span.end()
    # A sampled remote parent is followed, as ParentBased says.
    parent = SpanContext(5 << 64, 5, True, TraceFlags(TraceFlags.SAMPLED))
    kept = tracer.start_span("kept", set_span_in_context(NonRecordingSpan(parent)))
    kept.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["kept"]
    assert exporter.get_finished_spans()[0].parent == parent


def test_the_shops_processors_see_a_recording_span_as_an_sdk_span(monkeypatch):
    """The release stamp and the URL redaction run at the start of every span, as they did on the SDK's."""
    monkeypatch.setattr(releases, "_process_stable", "1.4.0")  # the release this process serves outside a request
    made, exporter = provider(True, SpanLimits())
    made.add_span_processor(ReleaseSpanProcessor())
    made.add_span_processor(QueryRedactingSpanProcessor())
    tracer = made.get_tracer("shop")
    assert isinstance(tracer, RecordingTracer)
    tracer.start_span("GET", attributes={"http.target": "/products?api_token=s3cret&page=2"}).end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["http.target"] == f"/products?api_token={REDACTED}&page=2"
    assert span.attributes["service.version"] == "1.4.0"
