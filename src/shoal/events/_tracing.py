"""Trace context across events: a PRODUCER span per publish, a CONSUMER span per handling.

``publish`` starts a producer span, a child of whatever span is current (a
request's server span, an app's own span) and sends its W3C ``traceparent`` with
the event. The subscriber runs the handler inside a consumer span that is a
child of the producer span, made current (OpenTelemetry context, in
``contextvars``) so that mesh calls and the app's own spans made by the handler
continue the trace. Both are shoal's light spans (``mesh._spans``), shipped like
the others; without installed tracing (a plain program) nothing is recorded and
the current app span's context, if any, is still passed on.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from shoal.mesh._spans import (
    AttributeValue,
    Sink,
    SpanData,
    SpanKindName,
    Tracing,
    active,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)

__all__ = ["EventSpan", "consumer_span", "producer_span"]

_FLAGS = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))


class EventSpan:
    """A producer or consumer span: its context to send on, and its end."""

    __slots__ = ("_ctx", "_data", "_sink", "_token", "traceparent", "tracestate")

    def __init__(
        self,
        ctx: SpanContext | None,
        data: SpanData | None = None,
        sink: Sink | None = None,
    ) -> None:
        self._ctx = ctx
        self._data = data
        self._sink = sink
        self._token: Any = None
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        if ctx is not None:
            self.traceparent = format_traceparent(
                ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled
            ).decode()
            if ctx.trace_state:
                self.tracestate = ctx.trace_state.to_header()

    def attach(self) -> None:
        """Make this span current in the running task's context (until :meth:`end`)."""
        if self._ctx is not None:
            span = NonRecordingSpan(self._ctx)
            self._token = otel_context.attach(trace.set_span_in_context(span))

    def set(self, name: str, value: AttributeValue) -> None:
        if self._data is not None:
            self._data.attributes[name] = value

    def end(self, error: str | None = None) -> None:
        data, self._data = self._data, None
        if data is not None and self._sink is not None:
            if error is not None:
                data.status = "error"
                data.status_message = error
            data.end_ns = time.time_ns()
            self._sink(data)
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


def producer_span(service: str, topic: str) -> EventSpan:
    """Start the span of one publish, a child of the current span (or a new root)."""
    parent = trace.get_current_span().get_span_context()
    tracing = active()
    if tracing is None:
        return EventSpan(parent if parent.is_valid else None)
    if parent.is_valid:
        trace_id, parent_id = parent.trace_id, parent.span_id
        sampled, state = bool(parent.trace_flags & 1), parent.trace_state
    else:
        trace_id, parent_id, state = new_trace_id(), 0, None
        sampled = tracing.sample_root(trace_id)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "shoal.service": service,
    }
    return _start(tracing, (trace_id, parent_id, sampled, state), f"send {topic}", "producer",
                  attributes)  # fmt: skip


def consumer_span(
    service: str,
    consumer: str,
    topic: str,
    event_id: str,
    delivery: int,
    traceparent: str | None,
    tracestate: str | None,
) -> EventSpan:
    """Start the span of handling one delivery: a child of the publisher's span."""
    tracing = active()
    parent = parse_traceparent(traceparent.encode("latin-1")) if traceparent else None
    if tracing is None:
        return EventSpan(None)
    state: TraceState | None = None
    if parent is not None:
        trace_id, parent_id, sampled = parent
        if tracestate:
            state = TraceState.from_header([tracestate])
    else:
        trace_id, parent_id = new_trace_id(), 0
        sampled = tracing.sample_root(trace_id)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": consumer,
        "messaging.message.id": event_id,
        "shoal.service": service,
        "shoal.delivery": delivery,
    }
    return _start(tracing, (trace_id, parent_id, sampled, state), f"process {topic}",
                  "consumer", attributes)  # fmt: skip


def _start(
    tracing: Tracing,
    place: tuple[int, int, bool, TraceState | None],
    name: str,
    kind: SpanKindName,
    attributes: dict[str, AttributeValue],
) -> EventSpan:
    """A new span at ``place`` (trace id, parent span id or 0, sampled, trace state):
    recorded only if sampled, its context passed on either way."""
    trace_id, parent_id, sampled, state = place
    ctx = SpanContext(trace_id, new_span_id(), False, _FLAGS[sampled], state)
    if not sampled:
        return EventSpan(ctx)
    data = SpanData(trace_id, ctx.span_id, parent_id, name, kind, attributes)
    return EventSpan(ctx, data, tracing.sink)
