"""Shipping shoal's light spans: JSON the supervisor takes, built in the batch flush, and
OTLP/HTTP to a collector when the environment names one."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, cast

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from shoal.backbone._connection import Backbone
from shoal.exceptions import ServeError
from shoal.mesh import _spans
from shoal.mesh._spans import SpanData
from shoal.mesh._tracing import client_span, server_span
from shoal.runtime._telemetry import (
    OtlpRelay,
    SpanShipper,
    data_to_readable,
    otlp_exporter,
    sample_ratio,
    tracing_resource,
)
from shoal.telemetry._records import SpanRecord

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FakeNats:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.published.append((subject, payload))


class FakeBackbone:
    def __init__(self) -> None:
        self.nc = FakeNats()
        self.connected = True


def shipper(otlp: OtlpRelay | None = None) -> tuple[SpanShipper, FakeNats]:
    backbone = FakeBackbone()
    made = SpanShipper(cast(Backbone, backbone), "shop", "orders", "orders-1", otlp=otlp)
    return made, backbone.nc


@pytest.fixture
def traced() -> Iterator[tuple[SpanShipper, FakeNats]]:
    """shoal's spans in a shipper, every root sampled, as ``install_tracing`` wires them."""
    made, nc = shipper()
    previous = _spans.install(1.0, made.add)
    yield made, nc
    _spans.set_active(previous)


def one_request() -> None:
    """A request with a caller (``TRACEPARENT``) making one mesh call: two spans."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "headers": [(b"traceparent", TRACEPARENT)],
    }
    span = server_span(scope, "orders", "gateway")
    span.forward(scope)
    client = client_span("GET", "catalog", "catalog-1", "127.0.0.1:9", 1)
    client.answered(200, None)
    span.status = 201
    span.end()


async def test_light_spans_are_queued_as_records_and_shipped_as_span_records(
    traced: tuple[SpanShipper, FakeNats],
) -> None:
    made, nc = traced
    one_request()
    app_span = TracerProvider().get_tracer("app").start_span("app work")
    app_span.end()
    made.on_end(cast(ReadableSpan, app_span))  # an app's own SDK span: the same queue
    assert [type(s) for s in made._queue][:2] == [SpanData, SpanData]  # no JSON per request
    await made.flush()
    ((subject, payload),) = nc.published
    assert subject == "shoal.shop.telemetry.spans"
    shipped = json.loads(payload)
    assert made.shipped == 3
    fields = set(SpanRecord.model_fields)
    for item in shipped:
        assert set(item) == fields
        SpanRecord.model_validate(item)
    client, server, app = shipped  # in the order they ended
    assert (server["kind"], client["kind"], app["kind"]) == ("server", "client", "internal")
    assert server["trace_id"] == client["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server["parent_id"] == "00f067aa0ba902b7"
    assert client["parent_id"] == server["span_id"]
    assert (server["service"], server["instance"]) == ("orders", "orders-1")
    assert server["attributes"]["http.response.status_code"] == 201
    assert server["attributes"]["shoal.caller"] == "gateway"
    assert client["attributes"]["shoal.attempt"] == 1
    assert server["status"] == client["status"] == "unset"
    assert server["end_ns"] >= server["start_ns"]


async def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    made, nc = shipper()
    made._queue = made._queue.__class__(maxlen=2)
    for n in range(3):
        made.add(SpanData(1, n + 1, 0, "x", "client", {}))
    assert made.dropped == 1
    await made.flush()
    assert [item["span_id"] for item in json.loads(nc.published[0][1])] == [
        "0000000000000002",
        "0000000000000003",
    ]


def test_the_sampling_ratio_is_validated() -> None:
    assert sample_ratio({}) == 1.0
    assert sample_ratio({"SHOAL_TRACE_SAMPLE": "0.01"}) == 0.01
    for bad in ("2", "-0.1", "half"):
        with pytest.raises(ServeError, match="SHOAL_TRACE_SAMPLE"):
            sample_ratio({"SHOAL_TRACE_SAMPLE": bad})


def test_an_otlp_exporter_only_when_the_environment_names_an_endpoint() -> None:
    assert otlp_exporter({}) is None
    assert isinstance(
        otlp_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}), OTLPSpanExporter
    )
    assert isinstance(
        otlp_exporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}),
        OTLPSpanExporter,
    )


def test_a_light_span_converts_to_an_sdk_span_with_the_instance_resource() -> None:
    data = SpanData(5, 6, 7, "GET /x", "server", {"shoal.service": "orders"})
    data.status, data.status_message, data.end_ns = "error", "status 500", data.start_ns + 10
    span = data_to_readable(data, tracing_resource("shop", "orders", "orders-1"))
    assert span.context is not None
    assert span.parent is not None
    assert (span.context.trace_id, span.context.span_id, span.parent.span_id) == (5, 6, 7)
    assert span.parent.is_remote
    assert span.status.description == "status 500"
    assert span.end_time == data.start_ns + 10
    assert span.resource.attributes["service.instance.id"] == "orders-1"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector's one route: protobuf ``ExportTraceServiceRequest`` at /v1/traces."""

    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


async def test_light_spans_reach_an_otlp_collector_from_the_background_flush(
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    url, received = collector
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=5)
    relay = OtlpRelay(exporter, tracing_resource("shop", "orders", "orders-1"), interval=0.05)
    made, nc = shipper(relay)
    previous = _spans.install(1.0, made.add)
    try:
        made.start()
        one_request()
        assert received == []  # nothing is sent on the request's path
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        await made.aclose()
    finally:
        _spans.set_active(previous)
    assert relay.exported == 2
    assert len(nc.published) == 1  # and to the supervisor, as ever
    ((path, body),) = received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "orders"
    assert resource["service.instance.id"] == "orders-1"
    assert resource["shoal.app"] == "shop"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "shoal"
    names = sorted(s.name for s in scope_spans.spans)
    assert names == ["GET catalog", "POST /orders"]
    trace_ids = {s.trace_id.hex() for s in scope_spans.spans}
    assert trace_ids == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    by_name = {s.name: s for s in scope_spans.spans}
    assert by_name["GET catalog"].parent_span_id == by_name["POST /orders"].span_id
    assert by_name["POST /orders"].parent_span_id.hex() == "00f067aa0ba902b7"
