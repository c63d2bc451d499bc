"""Spans over real sockets: a server span per request, a client span per attempt, context
carried in `traceparent` and restored from `contextvars` with no code in the app."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_resilience import Upstream, fast_retries, mesh, publish, record

from asgi_server import serve_asgi
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.types import Receive, Scope, Send

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The process's spans (one provider per process: installed once, emptied per test)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


class Flaky(Upstream):
    """503 for the first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        super().__init__(503)
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.status = 503 if self.hits < self.failures else 200
        await super().__call__(scope, receive, send)


def inbound(app: Upstream, instance: str) -> Inbound:
    rec = InstanceRecord(
        app="t", service="svc", instance=instance, host="127.0.0.1", port=1, started_at=0.0
    )
    return Inbound(app, InstanceStatus(rec))


def named(spans: tuple[ReadableSpan, ...], kind: trace.SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_time or 0)


async def test_a_retried_call_shows_each_attempt_as_a_child_span_with_its_server_span(
    discovery: tuple[MemoryRegistry, Discovery], spans: InMemorySpanExporter
) -> None:
    flaky = Flaky(failures=2)
    async with serve_asgi(inbound(flaky, "flaky")) as port:
        await publish(discovery, record("flaky", port))
        async with mesh(discovery[1], fast_retries()) as http:
            tracer = trace.get_tracer("test")
            with tracer.start_as_current_span("caller") as caller:
                response = await http.get("http://svc/items")
    assert response.status_code == 200
    assert flaky.hits == 3
    finished = spans.get_finished_spans()
    clients = named(finished, trace.SpanKind.CLIENT)
    servers = named(finished, trace.SpanKind.SERVER)
    assert [c.attributes["shoal.attempt"] for c in clients if c.attributes] == [1, 2, 3]
    trace_id = caller.get_span_context().trace_id
    for client in clients:
        assert client.context is not None
        assert client.context.trace_id == trace_id
        assert client.parent is not None
        assert client.parent.span_id == caller.get_span_context().span_id
    assert [c.status.status_code for c in clients] == [
        trace.StatusCode.ERROR,
        trace.StatusCode.ERROR,
        trace.StatusCode.UNSET,
    ]
    assert len(servers) == 3
    for client, server in zip(clients, servers, strict=True):
        assert server.parent is not None
        assert client.context is not None
        assert server.parent.span_id == client.context.span_id
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] in (503, 200)


async def test_the_app_sees_its_own_server_span_as_the_current_one(
    discovery: tuple[MemoryRegistry, Discovery], spans: InMemorySpanExporter
) -> None:
    seen: list[int] = []

    class Peek(Upstream):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(trace.get_current_span().get_span_context().span_id)
            headers = dict(scope["headers"])
            seen.append(int(headers[b"traceparent"].split(b"-")[2], 16))
            await super().__call__(scope, receive, send)

    async with serve_asgi(inbound(Peek(), "peek")) as port:
        await publish(discovery, record("peek", port))
        async with mesh(discovery[1], fast_retries()) as http:
            await http.get("http://svc/x")
    (server,) = named(spans.get_finished_spans(), trace.SpanKind.SERVER)
    assert server.context is not None
    # current in the app, and named by the traceparent the app reads (for its own tracing)
    assert seen == [server.context.span_id, server.context.span_id]


async def test_without_a_caller_a_request_starts_a_new_trace_and_errors_are_marked(
    spans: InMemorySpanExporter,
) -> None:
    async with serve_asgi(inbound(Upstream(500), "one")) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/boom")
    assert response.status_code == 500
    (server,) = named(spans.get_finished_spans(), trace.SpanKind.SERVER)
    assert server.parent is None
    assert server.name == "GET /boom"
    assert server.status.status_code == trace.StatusCode.ERROR
    assert server.end_time is not None
    assert server.start_time is not None
    assert server.end_time >= server.start_time
    assert time.time_ns() >= server.end_time
