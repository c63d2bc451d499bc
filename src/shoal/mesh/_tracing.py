"""Tracing with nothing to forward: a server span per request, a client span per attempt.

The inbound middleware reads W3C ``traceparent``/``tracestate`` from the request,
starts a server span and makes it current: the OpenTelemetry API's context (in
``contextvars``, so it follows the request into every task the app awaits)
holds a ``NonRecordingSpan`` with the server span's ids, so an app's own
OpenTelemetry spans nest under it and log lines carry its ids. The mesh client
starts a client span per attempt, a child of whatever span is current (shoal's
or the app's), and sends its context in ``traceparent``: a retried call shows
each try. No service code handles a header.

shoal's spans are light (``mesh._spans``), not OpenTelemetry SDK spans: a few
microseconds each. Until a process installs tracing (``shoal serve`` does, see
``runtime._telemetry``) they record nothing and cost next to nothing; a client
call still passes on the context of a current span an app made itself.
"""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from shoal.mesh._spans import (
    AttributeValue,
    Sink,
    SpanData,
    active,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from shoal.types import Scope

__all__ = ["ClientSpan", "ServerSpan", "client_span", "server_span"]

_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_FLAGS = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))


def _trace_headers(ctx: SpanContext) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"traceparent", format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled))
    ]
    if ctx.trace_state:
        headers.append((b"tracestate", ctx.trace_state.to_header().encode("latin-1")))
    return headers


def _finish(data: SpanData, sink: Sink, error: str | None) -> None:
    if error is not None:
        data.status = "error"
        data.status_message = error
    data.end_ns = time.time_ns()
    sink(data)


class ServerSpan:
    """The span of one inbound request; current (for outbound calls) until :meth:`end`."""

    __slots__ = ("_ctx", "_data", "_sink", "_token", "reason", "status")

    def __init__(
        self,
        ctx: SpanContext | None,
        data: SpanData | None = None,
        sink: Sink | None = None,
        token: object = None,
    ) -> None:
        self._ctx = ctx
        self._data = data
        self._sink = sink
        self._token = token
        self.status = 0
        self.reason = ""

    @property
    def recording(self) -> bool:
        return self._data is not None

    def forward(self, scope: Scope) -> Scope:
        """``scope`` with ``traceparent`` naming this span, so an app that traces on its own
        (FastAPI does, with any installed provider) nests under it instead of beside it.
        Always a new dict, the middleware's own."""
        if self._ctx is None:
            return {**scope}
        headers = [h for h in scope["headers"] if h[0] not in _TRACE_HEADERS]
        headers += _trace_headers(self._ctx)
        return {**scope, "headers": headers}

    def end(self, error: BaseException | None = None) -> None:
        data = self._data
        if data is not None and self._sink is not None:
            status = self.status
            if status:
                data.attributes["http.response.status_code"] = status
            if self.reason:
                data.attributes["shoal.reason"] = self.reason
            message = None
            if error is not None:
                message = f"{type(error).__name__}: {error}"
            elif status >= 500 or not status:
                message = self.reason or f"status {status}"
            _finish(data, self._sink, message)
            self._data = None
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def _incoming(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """The request's first ``traceparent`` and its ``tracestate`` (repeats joined)."""
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == b"traceparent":
            if traceparent is None:
                traceparent = value
        elif name == b"tracestate":
            tracestate = value if tracestate is None else tracestate + b"," + value
    return traceparent, tracestate


def server_span(scope: Scope, service: str, caller: str | None) -> ServerSpan:
    """Start (and make current) the server span of the HTTP request in ``scope``."""
    tracing = active()
    if tracing is None:
        return ServerSpan(None)
    traceparent, tracestate = _incoming(scope)
    parent = parse_traceparent(traceparent) if traceparent is not None else None
    state: TraceState | None = None
    if parent is not None:
        trace_id, parent_id, sampled = parent
        if tracestate:
            state = TraceState.from_header([tracestate.decode("latin-1")])
    else:  # none, or invalid: a new trace (and its tracestate is ignored)
        trace_id, parent_id = new_trace_id(), 0
        sampled = tracing.sample_root(trace_id)
    span_id = new_span_id()
    ctx = SpanContext(trace_id, span_id, False, _FLAGS[sampled], state)
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ctx)))
    if not sampled:
        return ServerSpan(ctx, token=token)
    method = scope["method"]
    path = scope["path"]
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.path": path,
        "shoal.service": service,
    }
    if caller:
        attributes["shoal.caller"] = caller
    data = SpanData(trace_id, span_id, parent_id, f"{method} {path[:80]}", "server", attributes)
    return ServerSpan(ctx, data, tracing.sink, token)


class ClientSpan:
    """The span of one attempt of a mesh call; its context travels in ``traceparent``."""

    __slots__ = ("_ctx", "_data", "_sink")

    def __init__(
        self, ctx: SpanContext | None, data: SpanData | None = None, sink: Sink | None = None
    ) -> None:
        self._ctx = ctx
        self._data = data
        self._sink = sink

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` (and ``tracestate``) naming this span as the parent."""
        return [] if self._ctx is None else _trace_headers(self._ctx)

    def answered(self, status: int, reason: str | None) -> None:
        data = self._data
        if data is not None and self._sink is not None:
            data.attributes["http.response.status_code"] = status
            if reason:
                data.attributes["shoal.reason"] = reason
            _finish(data, self._sink, (reason or f"status {status}") if status >= 500 else None)
            self._data = None

    def failed(self, outcome: str) -> None:
        data = self._data
        if data is not None and self._sink is not None:
            data.attributes["error.type"] = outcome.split(":", 1)[0]
            _finish(data, self._sink, outcome)
            self._data = None


def client_span(method: str, service: str, instance: str, address: str, attempt: int) -> ClientSpan:
    """Start the client span of attempt number ``attempt`` (a child of the current span)."""
    parent = trace.get_current_span().get_span_context()
    tracing = active()
    if tracing is None:  # not tracing: pass on the context of an app's own span, if any
        return ClientSpan(parent if parent.is_valid else None)
    if parent.is_valid:
        trace_id, parent_id = parent.trace_id, parent.span_id
        sampled = bool(parent.trace_flags & 1)
        state = parent.trace_state
    else:
        trace_id, parent_id, state = new_trace_id(), 0, None
        sampled = tracing.sample_root(trace_id)
    span_id = new_span_id()
    ctx = SpanContext(trace_id, span_id, False, _FLAGS[sampled], state)
    if not sampled:
        return ClientSpan(ctx)
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "server.address": address,
        "shoal.service": service,
        "shoal.instance": instance,
        "shoal.attempt": attempt,
    }
    data = SpanData(trace_id, span_id, parent_id, f"{method} {service}", "client", attributes)
    return ClientSpan(ctx, data, tracing.sink)
