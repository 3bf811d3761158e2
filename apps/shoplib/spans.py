"""The SDK's spans, recorded for less CPU.

Recording a server span with the OpenTelemetry SDK (1.45), the lab's processors and a batch queue cost 39 µs of CPU
here: a lock per span and per change, every attribute cleaned recursively into a bounded mapping, and a second,
read-only copy of the span made at its end for the processors. The shop's spans are each written by one thread and
read only once ended, so a RecordingSpan keeps its attributes in a plain dict, checks primitive values by type, and
hands itself to the processors at its end: 24 µs for the same span (README, "What telemetry costs"). Everything
else is the SDK's: its sampler, ids, limits, processors, exporters and the OTEL_* variables they read, the same span
API (events, links, status, exceptions), and the same ReadableSpan the exporters encode. bounded_update serves the
log records too (shoplib.log_records): the SDK bounds both with the same mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.sdk.trace import Event, Span, SpanLimits, Tracer, TracerProvider, logger
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util import types

# Values OTLP carries as they are; anything else (sequences, mappings, other types) is cleaned as the SDK does.
_PRIMITIVE = frozenset({str, bool, int, float})
_NO_ATTRIBUTES: Mapping[str, Any] = {}


def is_plain(value: object, limit: int | None) -> bool:
    """A value the SDK would keep as it is: a primitive, and no string over the length limit."""
    return type(value) in _PRIMITIVE and (limit is None or type(value) is not str or len(value) <= limit)


def store(attributes: dict[str, Any], key: str, value: Any, maximum: int | None) -> int:
    """Set one clean attribute as the SDK's BoundedAttributes does: a key set again moves to the end; over `maximum`,
    the oldest goes. How many were dropped (0 or 1)."""
    dropped = 0
    if key in attributes:
        del attributes[key]
    elif maximum is not None and len(attributes) >= maximum:
        del attributes[next(iter(attributes))]
        dropped = 1
    attributes[key] = value
    return dropped


def bounded_update(
    attributes: dict[str, Any], new: Mapping[str, Any], maximum: int | None, length_limit: int | None
) -> int:
    """`attributes` updated with `new` as the SDK's BoundedAttributes updates itself: values cleaned (primitives by a
    type check, anything else by the SDK's own cleaning, which drops what OTLP cannot carry), then each stored.
    How many were dropped."""
    if maximum == 0:
        return len(new)
    dropped = 0
    if not all(key and type(key) is str and is_plain(value, length_limit) for key, value in new.items()):
        cleaned = _clean_attribute_value(dict(new), length_limit)
        assert isinstance(cleaned, dict)
        dropped = len(new) - len(cleaned)
        new = cleaned
    if not attributes and (maximum is None or len(new) <= maximum):
        attributes.update(new)  # the common case, a record's or a new span's first attributes: nothing to move or drop
        return dropped
    for key, value in new.items():
        dropped += store(attributes, key, value, maximum)
    return dropped


class RecordingSpan(Span):
    """An SDK Span written by one thread at a time: no lock per change, no copy at its end."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        tracer: Tracer,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[trace_api.Link],
        record_exception: bool,
        set_status_on_exception: bool,
        start_time: int | None,
    ) -> None:
        # Span.__init__ is skipped on purpose: it builds the bounded, locked mappings this class exists to avoid.
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._resource = tracer.resource
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope
        self._span_processor = tracer.span_processor
        self._limits: SpanLimits = tracer._span_limits
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._record_end_metrics = None
        self._status = _UNSET
        self._start_time = start_time if start_time is not None else time_ns()
        self._end_time: int | None = None
        self._attributes: dict[str, Any] = {}
        self._dropped_attributes = 0
        # Most spans never get an event or a link: the SDK's bounded, locked lists are made at the first one.
        self._events = _NONE
        self._links = self._new_links(links) if links else _NONE
        # Events, links, status and exceptions go through the SDK's own methods, which take this lock.
        self._lock = _NoLock.instance  # type: ignore[assignment]
        if attributes:
            self.set_attributes(attributes)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        limits = self._limits
        self._dropped_attributes += bounded_update(
            self._attributes, attributes, limits.max_span_attributes, limits.max_span_attribute_length
        )

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        if self._limits.max_span_attributes == 0:
            self._dropped_attributes += 1
            return
        if not key or not isinstance(key, str):
            logger.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self._dropped_attributes += 1
            return
        limits = self._limits
        limit = limits.max_span_attribute_length
        self._dropped_attributes += store(
            self._attributes,
            key,
            value if is_plain(value, limit) else _clean_attribute_value(value, limit),
            limits.max_span_attributes,
        )

    def _add_event(self, event: Event) -> None:
        if self._events is _NONE:
            self._events = self._new_events()  # type: ignore[no-untyped-call]
        super()._add_event(event)

    def _add_link(self, link: trace_api.Link) -> None:
        if self._links is _NONE:
            self._links = self._new_links(())
        super()._add_link(link)

    def start(self, start_time: int | None = None, parent_context: context_api.Context | None = None) -> None:
        """The processors' on_start (the start time was set when the span was made)."""
        self._span_processor.on_start(self, parent_context=parent_context)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._span_processor._on_ending(self)
        self._span_processor.on_end(self)  # read-only from here: every change above checks _end_time


class RecordingTracer(Tracer):
    """The SDK's Tracer, starting RecordingSpans: the same sampling, ids and trace flags as Tracer.start_span, and
    start_as_current_span's `with` block without its two generator-based context managers (CurrentSpan)."""

    # The SDK's signature; a CurrentSpan in place of its _AgnosticContextManager (the same for `with` and decorators).
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0917
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        return CurrentSpan(
            self,
            {
                "name": name,
                "context": context,
                "kind": kind,
                "attributes": attributes,
                "links": links,
                "start_time": start_time,
                "record_exception": record_exception,
                "set_status_on_exception": set_status_on_exception,
            },
            end_on_exit,
        )

    def start_span(  # noqa: PLR0917 - the SDK's signature
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        links = links or ()
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if not self._is_enabled():
            return NonRecordingSpan(context=parent)  # type: ignore[arg-type]  # as the SDK does
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random_trace_id = self.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        if self.sampler is DEFAULT_ON:
            # The SDK's default sampler, ParentBased(ALWAYS_ON), decided as it decides: a root is sampled, a child
            # follows its parent, the trace state is the parent's. Its result object, made for every span, cost more
            # than the decision.
            sampled = parent is None or parent.trace_flags.sampled
            recording, trace_state = sampled, None if parent is None else parent.trace_state
            kept = attributes
        else:
            sampling = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled, recording = sampling.decision.is_sampled(), sampling.decision.is_recording()
            trace_state, kept = sampling.trace_state, sampling.attributes
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(context=span_context)
        span = RecordingSpan(
            name,
            span_context,
            parent=parent,
            tracer=self,
            kind=kind,
            attributes=kept or _NO_ATTRIBUTES,
            links=links,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
            start_time=start_time,
        )
        span.start(parent_context=context)
        return span


class CurrentSpan:
    """What `with tracer.start_as_current_span(...) as span:` does in the SDK (Tracer.start_as_current_span and
    trace.use_span), in one object: the span starts on entry and is current inside; on exit it stops being current,
    an escaping Exception (not a BaseException such as KeyboardInterrupt) is recorded on it and sets its status as
    asked, and it ends if asked. 2-3 µs a span less than the SDK's generators (a database statement's span: 14.8
    µs with them, 12.5 without, export included). As a decorator, it is the SDK's own."""

    __slots__ = ("_arguments", "_end_on_exit", "_span", "_token", "_tracer")

    def __init__(self, tracer: RecordingTracer, arguments: dict[str, Any], end_on_exit: bool) -> None:
        self._tracer, self._arguments, self._end_on_exit = tracer, arguments, end_on_exit

    def __enter__(self) -> trace_api.Span:
        span = self._span = self._tracer.start_span(**self._arguments)
        self._token = context_api.attach(trace_api.set_span_in_context(span))
        return span

    def __exit__(self, _kind: object, error: BaseException | None, _traceback: object) -> None:
        span = self._span
        try:
            context_api.detach(self._token)
            if isinstance(error, Exception) and span.is_recording():
                if self._arguments["record_exception"]:
                    span.record_exception(error)
                if self._arguments["set_status_on_exception"]:
                    span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        finally:
            if self._end_on_exit:
                span.end()

    def __call__(self, function: Any) -> Any:
        sdk = Tracer.start_as_current_span(self._tracer, end_on_exit=self._end_on_exit, **self._arguments)
        return sdk(function)


def record_lightly(provider: TracerProvider) -> None:
    """From now on `provider` hands out RecordingTracers (tracers obtained through the API's proxies resolve on
    their first use, so this must run before the first span). A RecordingTracer is an SDK Tracer with one method
    replaced and no state of its own, so the provider's tracer is re-classed rather than rebuilt."""
    get_sdk_tracer = provider.get_tracer

    def get_tracer(*args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = get_sdk_tracer(*args, **kwargs)
        if type(tracer) is Tracer:
            tracer.__class__ = RecordingTracer
        return tracer

    provider.get_tracer = get_tracer  # type: ignore[method-assign]


class _NoLock:
    """A span is changed by one thread at a time (the request's, or an instrumentation's on its behalf)."""

    instance: _NoLock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None


_NoLock.instance = _NoLock()
_NONE: tuple[Any, ...] = ()  # no events or links (yet): what ReadableSpan reads as none, with none dropped
_UNSET = trace_api.Status(trace_api.StatusCode.UNSET)
