"""Tracing with nothing to forward: a server span per request, a client span per attempt.

The inbound middleware reads W3C ``traceparent``/``tracestate`` from the request,
starts a server span and makes it current (OpenTelemetry's context lives in
``contextvars``, so it follows the request into every task the app awaits). The
mesh client starts a client span per attempt, a child of whatever is current,
and sends its context in ``traceparent``: a retried call shows each try. No
service code handles a header.

Spans are made with the OpenTelemetry API. Until a process installs a tracer
provider (``shoal serve`` does, see ``runtime._telemetry``) they cost next to
nothing and record nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shoal.types import Scope

__all__ = ["ClientSpan", "ServerSpan", "client_span", "server_span"]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_TRACER = trace.get_tracer("shoal")  # a proxy: it follows the provider installed later


class _AsgiHeaders(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads ``traceparent`` and ``tracestate`` from ASGI headers (lowercase bytes names)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.encode("latin-1")
        found = [value.decode("latin-1") for n, value in carrier if n == name]
        return found or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [n.decode("latin-1") for n, _ in carrier]


_GETTER = _AsgiHeaders()


class ServerSpan:
    """The span of one inbound request; current (for outbound calls) until :meth:`end`."""

    __slots__ = ("_span", "_token", "reason", "status")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token
        self.status = 0
        self.reason = ""

    @property
    def recording(self) -> bool:
        return self._span.is_recording()

    def forward(self, scope: Scope) -> Scope:
        """``scope`` with ``traceparent`` naming this span, so an app that traces on its own
        (FastAPI does, with any installed provider) nests under it instead of beside it."""
        if not self._span.get_span_context().is_valid:
            return scope
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        headers = [(n, v) for n, v in scope["headers"] if n not in _TRACE_HEADERS]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]
        return {**scope, "headers": headers}

    def end(self, error: BaseException | None = None) -> None:
        span = self._span
        if span.is_recording():
            if self.status:
                span.set_attribute("http.response.status_code", self.status)
            if self.reason:
                span.set_attribute("shoal.reason", self.reason)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            elif self.status >= 500 or not self.status:
                span.set_status(Status(StatusCode.ERROR, self.reason or f"status {self.status}"))
            span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


def server_span(scope: Scope, service: str, caller: str | None) -> ServerSpan:
    """Start (and make current) the server span of the HTTP request in ``scope``."""
    parent = _PROPAGATOR.extract(scope["headers"], getter=_GETTER)
    method = scope["method"]
    path = scope["path"]
    attributes: dict[str, str] = {
        "http.request.method": method,
        "url.path": path,
        "shoal.service": service,
    }
    if caller:
        attributes["shoal.caller"] = caller
    span = _TRACER.start_span(
        f"{method} {path[:80]}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return ServerSpan(span, token)


class ClientSpan:
    """The span of one attempt of a mesh call; its context travels in ``traceparent``."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` (and ``tracestate``) naming this span as the parent."""
        if not self._span.get_span_context().is_valid:
            return []
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]

    def answered(self, status: int, reason: str | None) -> None:
        span = self._span
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if reason:
                span.set_attribute("shoal.reason", reason)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, reason or f"status {status}"))
            span.end()

    def failed(self, outcome: str) -> None:
        span = self._span
        if span.is_recording():
            span.set_attribute("error.type", outcome.split(":", 1)[0])
            span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()


def client_span(method: str, service: str, instance: str, address: str, attempt: int) -> ClientSpan:
    """Start the client span of attempt number ``attempt`` (a child of the current span)."""
    span = _TRACER.start_span(
        f"{method} {service}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "server.address": address,
            "shoal.service": service,
            "shoal.instance": instance,
            "shoal.attempt": attempt,
        },
    )
    return ClientSpan(span)
