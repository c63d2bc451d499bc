"""An instance's tracing, and the shipping of its finished spans to the supervisor.

``shoal serve`` installs tracing: shoal's own server and client spans take the
light path (``mesh._spans``), and an OpenTelemetry SDK tracer provider serves
the app's own spans (FastAPI instrumentation, a manual tracer); both sample
with ``SHOAL_TRACE_SAMPLE`` (a ratio, 1.0 by default: every request in
development; a sampled parent is always followed, so a trace is whole or
absent) and both end in one :class:`SpanShipper`. Finished, sampled spans are
queued as they are, turned into JSON (the supervisor's ``SpanRecord``) and
published on ``shoal.<app>.telemetry.spans`` every half second; the supervisor
stores them (``DIR/.shoal/telemetry.db``). Shipping never blocks a request: the
queue is bounded, and what does not fit while NATS is away is dropped and
counted. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set,
spans also go to that OTLP/HTTP collector (Jaeger, Tempo): shoal's through
:class:`OtlpRelay` (converted to SDK spans and exported on a worker thread),
the app's through the SDK's batch exporter. Resource: ``service.name``,
``service.instance.id``, ``shoal.app``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any, cast

import nats.errors
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from shoal.backbone._connection import Backbone
from shoal.exceptions import ServeError
from shoal.mesh import _spans as spans
from shoal.mesh._spans import SpanData
from shoal.runtime._periodic import Periodic

__all__ = [
    "SAMPLE_ENV",
    "OtlpRelay",
    "SpanShipper",
    "data_to_readable",
    "data_to_json",
    "install_tracing",
    "otlp_exporter",
    "span_subject",
    "span_to_json",
    "tracing_resource",
]


SAMPLE_ENV = "SHOAL_TRACE_SAMPLE"
_KINDS = {
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.INTERNAL: "internal",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}


def span_subject(app: str) -> str:
    return f"shoal.{app}.telemetry.spans"


def span_to_json(span: ReadableSpan, service: str, instance: str) -> dict[str, Any]:
    """A finished span as the supervisor's store takes it (``SpanRecord``'s fields)."""
    ctx = span.context
    assert ctx is not None
    parent = span.parent
    attributes = {
        k: v for k, v in (span.attributes or {}).items() if isinstance(v, str | int | float | bool)
    }
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": _KINDS.get(span.kind, "internal"),
        "service": service,
        "instance": instance,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or span.start_time or 0,
        "status": _STATUS.get(span.status.status_code, "unset"),
        "status_message": span.status.description or "",
        "attributes": attributes,
    }


def data_to_json(data: SpanData, service: str, instance: str) -> dict[str, Any]:
    """One of shoal's light spans as the supervisor's store takes it (``SpanRecord``)."""
    return {
        "trace_id": format(data.trace_id, "032x"),
        "span_id": format(data.span_id, "016x"),
        "parent_id": format(data.parent_id, "016x") if data.parent_id else None,
        "name": data.name,
        "kind": data.kind,
        "service": service,
        "instance": instance,
        "start_ns": data.start_ns,
        "end_ns": data.end_ns or data.start_ns,
        "status": data.status,
        "status_message": data.status_message,
        "attributes": data.attributes,
    }


_SCOPE = InstrumentationScope("shoal")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_READABLE_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_UNSET = Status(StatusCode.UNSET)


def data_to_readable(data: SpanData, resource: Resource) -> ReadableSpan:
    """One of shoal's light spans as an SDK span, for the SDK's exporters (OTLP)."""
    parent = None
    if data.parent_id:  # a server (consumer) span's parent is the caller's (publisher's): remote
        remote = data.kind in ("server", "consumer")
        parent = SpanContext(data.trace_id, data.parent_id, remote, _SAMPLED)
    status = _UNSET
    if data.status == "error":
        status = Status(StatusCode.ERROR, data.status_message)
    return ReadableSpan(
        name=data.name,
        context=SpanContext(data.trace_id, data.span_id, False, _SAMPLED),
        parent=parent,
        resource=resource,
        attributes=data.attributes,
        kind=_READABLE_KINDS[data.kind],
        status=status,
        start_time=data.start_ns,
        end_time=data.end_ns or data.start_ns,
        instrumentation_scope=_SCOPE,
    )


class OtlpRelay:
    """shoal's light spans to an OTLP collector: queued as they end, turned into SDK
    ``ReadableSpan`` objects and exported on a worker thread every ``interval``."""

    def __init__(
        self,
        exporter: SpanExporter,
        resource: Resource,
        *,
        interval: float = 0.5,
        max_batch: int = 512,
        max_queue: int = 20_000,
    ) -> None:
        self._exporter = exporter
        self._resource = resource
        self._max_batch = max_batch
        self._queue: collections.deque[SpanData] = collections.deque(maxlen=max_queue)
        self._periodic = Periodic("shoal-otlp-relay", interval, self.flush, last_flush=2.0)
        self.exported = 0
        self.dropped = 0

    def add(self, data: SpanData) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(data)

    def start(self) -> None:
        self._periodic.start()

    async def aclose(self) -> None:
        await self._periodic.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(self._exporter.shutdown), 2.0)

    async def flush(self) -> None:
        """Export what is queued, in batches, on a worker thread (the exporter blocks)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            ok = await asyncio.to_thread(self._export, batch)
            if ok:
                self.exported += len(batch)
            else:  # the exporter has retried already; a collector that is away loses them
                self.dropped += len(batch)

    def _export(self, batch: list[SpanData]) -> bool:
        readable = [data_to_readable(d, self._resource) for d in batch]
        return self._exporter.export(readable) is SpanExportResult.SUCCESS


class SpanShipper(SpanProcessor):
    """Batches finished spans and publishes them to the supervisor over NATS.

    Two sources: shoal's light spans (:meth:`add`, the ``mesh._spans`` sink) and the
    app's own SDK spans (:meth:`on_end`, as the provider's span processor). Either is
    queued as it is and turned into JSON in :meth:`flush`, off the request's path.
    With ``otlp``, light spans also go to that collector (:class:`OtlpRelay`).
    """

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        instance: str,
        *,
        interval: float = 0.5,
        max_batch: int = 512,
        max_queue: int = 20_000,
        otlp: OtlpRelay | None = None,
    ) -> None:
        self._backbone = backbone
        self._subject = span_subject(app)
        self._service = service
        self._instance = instance
        self._max_batch = max_batch
        self._queue: collections.deque[ReadableSpan | SpanData] = collections.deque(
            maxlen=max_queue
        )
        self._periodic = Periodic("shoal-span-shipper", interval, self.flush)
        self.otlp = otlp
        self.shipped = 0
        self.dropped = 0

    # -- sinks (called where spans end: on the event loop's thread) -------------------

    def add(self, data: SpanData) -> None:
        """A finished, sampled light span (``mesh._spans`` calls it)."""
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
        queue.append(data)
        if self.otlp is not None:
            self.otlp.add(data)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(span)

    def shutdown(self) -> None:
        pass  # the loop-bound flush happens in aclose()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- shipping --------------------------------------------------------------------

    def start(self) -> None:
        self._periodic.start()
        if self.otlp is not None:
            self.otlp.start()

    async def aclose(self) -> None:
        await self._periodic.stop()
        if self.otlp is not None:
            await self.otlp.aclose()

    def _json(self, span: ReadableSpan | SpanData) -> dict[str, Any]:
        if type(span) is SpanData:
            return data_to_json(span, self._service, self._instance)
        return span_to_json(cast(ReadableSpan, span), self._service, self._instance)

    async def flush(self) -> None:
        """Publish what is queued, in batches; kept for later while NATS is away."""
        nc = self._backbone.nc
        while self._queue:
            if not self._backbone.connected:
                return
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            payload = json.dumps([self._json(s) for s in batch], separators=(",", ":")).encode()
            try:
                await nc.publish(self._subject, payload)
            except (nats.errors.Error, OSError):
                self._queue.extendleft(reversed(batch))
                return
            self.shipped += len(batch)


def sample_ratio(env: dict[str, str] | None = None) -> float:
    text = (os.environ if env is None else env).get(SAMPLE_ENV, "1")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ServeError(f"{SAMPLE_ENV} must be a ratio between 0 and 1, got {text!r}")
    return value


def otlp_exporter(env: Mapping[str, str] | None = None) -> SpanExporter | None:
    """The OTLP/HTTP exporter the environment asks for (``OTEL_EXPORTER_OTLP_*``), or None."""
    env = os.environ if env is None else env
    if not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads its endpoint, headers and timeout from the environment


def tracing_resource(app: str, service: str, instance: str) -> Resource:
    return Resource.create(
        {"service.name": service, "service.instance.id": instance, "shoal.app": app}
    )


def install_tracing(backbone: Backbone, app: str, service: str, instance: str) -> SpanShipper:
    """Install this process's tracing; returns the shipper to ``start``/``aclose``.

    shoal's own spans take the light path (``mesh._spans``) into the shipper; an SDK
    tracer provider, with the same sampling and the same shipper, serves the app's own
    OpenTelemetry spans."""
    ratio = sample_ratio()
    resource = tracing_resource(app, service, instance)
    exporter = otlp_exporter()
    relay = OtlpRelay(exporter, resource) if exporter is not None else None
    shipper = SpanShipper(backbone, app, service, instance, otlp=relay)
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(shipper)
    app_exporter = otlp_exporter()
    if app_exporter is not None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(app_exporter))
    trace.set_tracer_provider(provider)
    spans.install(ratio, shipper.add)
    return shipper
