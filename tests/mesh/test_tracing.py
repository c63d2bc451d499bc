"""Spans over real sockets: a server span per request, a client span per attempt, context
carried in `traceparent` and restored from `contextvars` with no code in the app; and the
light span path under them: W3C trace context, sampling, the OpenTelemetry API's context."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from test_resilience import Upstream, fast_retries, mesh, publish, record

from asgi_server import serve_asgi
from shoal.mesh import _spans
from shoal.mesh._spans import SpanData, parse_traceparent
from shoal.mesh._tracing import client_span, server_span
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.types import Receive, Scope, Send

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _app_tracer() -> trace.Tracer:
    """The app's own SDK tracer (one provider per process: installed once, if none is)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    return trace.get_tracer("test")


@pytest.fixture
def spans() -> Iterator[list[SpanData]]:
    """shoal's finished, sampled spans, with every root sampled (as ``SHOAL_TRACE_SAMPLE=1``)."""
    finished: list[SpanData] = []
    previous = _spans.install(1.0, finished.append)
    yield finished
    _spans.set_active(previous)


@pytest.fixture
def unsampled() -> Iterator[list[SpanData]]:
    """As ``spans``, with no root sampled (``SHOAL_TRACE_SAMPLE=0``)."""
    finished: list[SpanData] = []
    previous = _spans.install(0.0, finished.append)
    yield finished
    _spans.set_active(previous)


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


def named(spans: list[SpanData], kind: str) -> list[SpanData]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_ns)


def request(*headers: tuple[bytes, bytes], path: str = "/items") -> Scope:
    return {"type": "http", "method": "GET", "path": path, "headers": list(headers)}


def traceparent_of(headers: list[tuple[bytes, bytes]]) -> tuple[int, int, bool]:
    (value,) = [v for n, v in headers if n == b"traceparent"]
    parsed = parse_traceparent(value)
    assert parsed is not None
    return parsed


# -- over real sockets -------------------------------------------------------------


async def test_a_retried_call_shows_each_attempt_as_a_child_span_with_its_server_span(
    discovery: tuple[MemoryRegistry, Discovery], spans: list[SpanData]
) -> None:
    flaky = Flaky(failures=2)
    async with serve_asgi(inbound(flaky, "flaky")) as port:
        await publish(discovery, record("flaky", port))
        async with mesh(discovery[1], fast_retries()) as http:
            with _app_tracer().start_as_current_span("caller") as caller:
                response = await http.get("http://svc/items")
    assert response.status_code == 200
    assert flaky.hits == 3
    clients = named(spans, "client")
    servers = named(spans, "server")
    assert [c.attributes["shoal.attempt"] for c in clients] == [1, 2, 3]
    trace_id = caller.get_span_context().trace_id
    for client in clients:
        assert client.trace_id == trace_id
        assert client.parent_id == caller.get_span_context().span_id
    assert [c.status for c in clients] == ["error", "error", "unset"]
    assert [c.attributes.get("error.type") for c in clients] == ["503", "503", None]
    assert clients[-1].attributes["http.response.status_code"] == 200
    assert len(servers) == 3
    for client, server in zip(clients, servers, strict=True):
        assert server.trace_id == trace_id
        assert server.parent_id == client.span_id
        assert server.attributes["http.response.status_code"] in (503, 200)
    assert [s.status for s in servers] == ["error", "error", "unset"]


async def test_the_app_sees_its_own_server_span_as_the_current_one(
    discovery: tuple[MemoryRegistry, Discovery], spans: list[SpanData]
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
    (server,) = named(spans, "server")
    # current in the app, and named by the traceparent the app reads (for its own tracing)
    assert seen == [server.span_id, server.span_id]


async def test_without_a_caller_a_request_starts_a_new_trace_and_errors_are_marked(
    spans: list[SpanData],
) -> None:
    async with serve_asgi(inbound(Upstream(500), "one")) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/boom")
    assert response.status_code == 500
    (server,) = named(spans, "server")
    assert server.parent_id == 0
    assert server.name == "GET /boom"
    assert server.status == "error"
    assert server.status_message == "status 500"
    assert server.end_ns >= server.start_ns > 0
    assert time.time_ns() >= server.end_ns


# -- W3C trace context ----------------------------------------------------------------


def test_a_valid_traceparent_parses_to_its_ids_and_sampled_flag() -> None:
    assert parse_traceparent(TRACEPARENT) == (TRACE_ID, PARENT_ID, True)
    assert parse_traceparent(TRACEPARENT[:-2] + b"00") == (TRACE_ID, PARENT_ID, False)
    assert parse_traceparent(TRACEPARENT[:-2] + b"03") == (TRACE_ID, PARENT_ID, True)
    assert parse_traceparent(b" " + TRACEPARENT + b"\t") == (TRACE_ID, PARENT_ID, True)
    # a later version may append fields: its first four are read
    assert parse_traceparent(b"cc" + TRACEPARENT[2:] + b"-what-comes") == (
        TRACE_ID,
        PARENT_ID,
        True,
    )


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT.upper(),  # hex is lowercase
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        b"ff" + TRACEPARENT[2:],  # version ff is invalid
        TRACEPARENT + b"-00",  # version 00 has exactly four fields
        TRACEPARENT[:-1],  # short
        b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  # misplaced dash
        b"00-4bf92f3577b34da6a3ce929d0e0e47_6-00f067aa0ba902b7-01",  # int() would take "_"
        b"",
    ],
)
def test_an_invalid_traceparent_is_refused(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_a_server_span_continues_the_callers_trace_and_forwards_its_own_id(
    spans: list[SpanData],
) -> None:
    scope = request((b"host", b"svc"), (b"traceparent", TRACEPARENT), (b"tracestate", b"k=v"))
    span = server_span(scope, "svc", "caller")
    inner = span.forward(scope)
    assert inner is not scope
    assert scope["headers"][1] == (b"traceparent", TRACEPARENT)  # the original is untouched
    trace_id, span_id, sampled = traceparent_of(inner["headers"])
    assert (trace_id, sampled) == (TRACE_ID, True)
    assert span_id != PARENT_ID
    assert (b"tracestate", b"k=v") in inner["headers"]
    assert (b"host", b"svc") in inner["headers"]
    span.status = 200
    span.end()
    (data,) = spans
    assert (data.trace_id, data.span_id, data.parent_id) == (TRACE_ID, span_id, PARENT_ID)
    assert data.attributes["shoal.caller"] == "caller"
    assert data.attributes["http.response.status_code"] == 200
    assert data.status == "unset"


def test_an_invalid_traceparent_starts_a_new_trace_and_drops_its_tracestate(
    spans: list[SpanData],
) -> None:
    scope = request((b"traceparent", TRACEPARENT.upper()), (b"tracestate", b"k=v"))
    span = server_span(scope, "svc", None)
    inner = span.forward(scope)
    trace_id, _, sampled = traceparent_of(inner["headers"])
    assert trace_id not in (0, TRACE_ID)
    assert sampled
    assert all(name != b"tracestate" for name, _ in inner["headers"])
    span.end(RuntimeError("boom"))
    (data,) = spans
    assert data.parent_id == 0
    assert (data.status, data.status_message) == ("error", "RuntimeError: boom")


def test_an_unsampled_parent_is_followed_ids_still_propagate_and_nothing_is_recorded(
    spans: list[SpanData],
) -> None:
    scope = request((b"traceparent", TRACEPARENT[:-2] + b"00"))
    span = server_span(scope, "svc", None)
    assert not span.recording
    current = trace.get_current_span().get_span_context()
    assert (current.trace_id, current.trace_flags.sampled) == (TRACE_ID, False)
    trace_id, span_id, sampled = traceparent_of(span.forward(scope)["headers"])
    assert (trace_id, span_id, sampled) == (TRACE_ID, current.span_id, False)
    client = client_span("GET", "other", "other-1", "127.0.0.1:1", 1)
    assert traceparent_of(client.headers())[::2] == (TRACE_ID, False)
    client.answered(200, None)
    span.end()
    assert spans == []
    assert not trace.get_current_span().get_span_context().is_valid


def test_with_a_zero_ratio_a_new_trace_is_not_sampled_but_has_ids(
    unsampled: list[SpanData],
) -> None:
    span = server_span(request(), "svc", None)
    trace_id, _, sampled = traceparent_of(span.forward(request())["headers"])
    assert trace_id
    assert not sampled
    client = client_span("GET", "other", "other-1", "127.0.0.1:1", 1)
    assert traceparent_of(client.headers())[0] == trace_id
    client.failed("ConnectError: refused")
    span.end()
    assert unsampled == []


def test_roots_are_sampled_by_the_sdks_ratio_rule() -> None:
    tracing = _spans.Tracing(0.25, lambda _: None)
    sdk = TraceIdRatioBased(0.25)
    for _ in range(2000):
        trace_id = _spans.new_trace_id()
        decision = sdk.should_sample(None, trace_id, "x").decision
        assert tracing.sample_root(trace_id) == (decision == Decision.RECORD_AND_SAMPLE)


# -- the OpenTelemetry API's context -------------------------------------------------------


def test_while_a_server_span_is_open_the_api_sees_it_and_app_spans_nest_under_it(
    spans: list[SpanData],
) -> None:
    span = server_span(request((b"traceparent", TRACEPARENT), (b"tracestate", b"k=v")), "s", None)
    current = trace.get_current_span()
    assert isinstance(current, trace.NonRecordingSpan)
    ctx = current.get_span_context()
    assert (ctx.trace_id, ctx.is_remote, ctx.trace_flags.sampled) == (TRACE_ID, False, True)
    with _app_tracer().start_as_current_span("handler") as mine:
        assert mine.get_span_context().trace_id == TRACE_ID
        parent = cast(ReadableSpan, mine).parent
        assert parent is not None
        assert parent.span_id == ctx.span_id
        client = client_span("POST", "other", "other-1", "127.0.0.1:1", 2)
        headers = client.headers()
        assert (b"tracestate", b"k=v") in headers  # passed on through the context
        client.answered(502, "upstream")
    span.status = 200
    span.end()
    assert not trace.get_current_span().get_span_context().is_valid
    client_data, server_data = spans
    assert client_data.parent_id == mine.get_span_context().span_id
    assert client_data.trace_id == TRACE_ID
    assert traceparent_of(headers)[1] == client_data.span_id
    assert (client_data.status, client_data.status_message) == ("error", "upstream")
    assert client_data.attributes["shoal.reason"] == "upstream"
    assert client_data.attributes["shoal.attempt"] == 2
    assert server_data.span_id == ctx.span_id


def test_a_client_span_outside_any_span_starts_a_trace(spans: list[SpanData]) -> None:
    client = client_span("GET", "other", "other-1", "127.0.0.1:1", 1)
    trace_id, span_id, sampled = traceparent_of(client.headers())
    client.failed("ReadTimeout: slow")
    (data,) = spans
    assert (data.trace_id, data.span_id, data.parent_id, sampled) == (trace_id, span_id, 0, True)
    assert data.attributes["error.type"] == "ReadTimeout"
    assert data.status == "error"


def test_not_tracing_costs_nothing_but_passes_on_an_apps_own_span() -> None:
    previous = _spans.set_active(None)
    try:
        scope = request((b"traceparent", TRACEPARENT))
        span = server_span(scope, "svc", None)
        inner = span.forward(scope)
        assert inner is not scope
        assert inner["headers"] == scope["headers"]
        assert not trace.get_current_span().get_span_context().is_valid
        span.end()
        assert client_span("GET", "s", "s-1", "a", 1).headers() == []
        with _app_tracer().start_as_current_span("app") as mine:
            headers = client_span("GET", "s", "s-1", "a", 1).headers()
        ctx = mine.get_span_context()
        assert traceparent_of(headers) == (ctx.trace_id, ctx.span_id, True)
    finally:
        _spans.set_active(previous)
