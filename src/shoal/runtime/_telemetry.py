"""An instance's tracer provider, and the shipping of its finished spans to the supervisor.

``shoal serve`` installs an OpenTelemetry tracer provider: resource
``service.name``/``service.instance.id``, sampling ``SHOAL_TRACE_SAMPLE`` (a ratio,
1.0 by default: every request in development; a sampled parent is always
followed, so a trace is whole or absent). Finished, sampled spans are batched
and published on ``shoal.<app>.telemetry.spans`` every half second; the
supervisor stores them (``DIR/.shoal/telemetry.db``). Shipping never blocks a
request: the queue is bounded, and what does not fit while NATS is away is
dropped and counted. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans also go
to that OTLP/HTTP collector (Jaeger, Tempo) through the SDK's batch exporter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from typing import Any

import nats.errors
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from shoal.backbone._connection import Backbone
from shoal.exceptions import ServeError

__all__ = ["SAMPLE_ENV", "SpanShipper", "install_tracing", "span_subject", "span_to_json"]

log = logging.getLogger("shoal.telemetry")

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


class SpanShipper(SpanProcessor):
    """Batches finished spans and publishes them to the supervisor over NATS."""

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
    ) -> None:
        self._backbone = backbone
        self._subject = span_subject(app)
        self._service = service
        self._instance = instance
        self._interval = interval
        self._max_batch = max_batch
        self._queue: collections.deque[ReadableSpan] = collections.deque(maxlen=max_queue)
        self._task: asyncio.Task[None] | None = None
        self.shipped = 0
        self.dropped = 0

    # -- SpanProcessor (called where spans end: on the event loop's thread) ------------

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
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shoal-span-shipper")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 1.0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # telemetry must never take the instance down
                log.debug("span shipping failed: %r", exc)

    async def flush(self) -> None:
        """Publish what is queued, in batches; kept for later while NATS is away."""
        nc = self._backbone.nc
        while self._queue:
            if not self._backbone.connected:
                return
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            payload = json.dumps(
                [span_to_json(s, self._service, self._instance) for s in batch],
                separators=(",", ":"),
            ).encode()
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


def install_tracing(backbone: Backbone, app: str, service: str, instance: str) -> SpanShipper:
    """Install this process's tracer provider; returns the shipper to ``start``/``aclose``."""
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "service.instance.id": instance, "shoal.app": app}
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio())),
    )
    shipper = SpanShipper(backbone, app, service, instance)
    provider.add_span_processor(shipper)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return shipper
