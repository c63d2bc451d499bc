"""shoal's own spans without the OpenTelemetry SDK: ids, W3C trace context, a record.

A request's server span and each attempt's client span cost a few microseconds
here against ~26 for an SDK span (``BENCHMARKS.md``, tracing). What a span needs
is kept and nothing else: 128/64-bit ids from a private, fork-safe ``Random``,
``time.time_ns()``, a dict of attributes, a status. A finished, sampled span is
handed as a :class:`SpanData` to the sink that :func:`install` set (the
shipper's queue); turning it into JSON or OTLP is the shipper's business, in its
background flush, not the request's.

Trace context is W3C ``traceparent`` (version 00 written; parsed as the spec
says, a later version's extra fields ignored) with ``tracestate`` passed on.
An invalid ``traceparent`` starts a new trace. Sampling follows the parent's
sampled flag when there is a parent, else a root is sampled when the low 64 bits
of its trace id fall under ``ratio * 2**64``: the rule of the SDK's
``TraceIdRatioBased``, so apps' own roots and shoal's agree. Unsampled spans
still get ids and propagate them (flags ``00``) but record nothing.

Until :func:`install` is called (``shoal serve`` does, through
``runtime._telemetry.install_tracing``) nothing is traced: :func:`active`
returns None and the callers skip all of it.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from typing import Final, Literal

__all__ = [
    "Sink",
    "SpanData",
    "Tracing",
    "active",
    "format_traceparent",
    "install",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "set_active",
    "uninstall",
]

AttributeValue = str | int | float | bool
SpanKindName = Literal["server", "client", "producer", "consumer"]
SpanStatusName = Literal["unset", "ok", "error"]

# version-trace_id-parent_id-flags, lowercase hex; a later version may append "-..." fields.
_TRACEPARENT: Final = re.compile(
    rb"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^ \t]*)?[ \t]*"
)
_RATIO_MASK: Final = (1 << 64) - 1

_rng = random.Random()  # seeded from os.urandom; an app's random.seed() does not touch it
_getrandbits = _rng.getrandbits


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)  # a forked worker must not repeat its parent's ids


def new_trace_id() -> int:
    return _getrandbits(128) or 1


def new_span_id() -> int:
    return _getrandbits(64) or 1


def parse_traceparent(value: bytes) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) from a ``traceparent`` value, None if invalid."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags = match.group(1, 2, 3, 4)
    if version == b"ff" or (version == b"00" and match.group(5) is not None):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


class SpanData:
    """A finished (or running) sampled span: what the supervisor's store and OTLP need."""

    __slots__ = (
        "attributes", "end_ns", "kind", "name", "parent_id", "span_id", "start_ns", "status",
        "status_message", "trace_id",
    )  # fmt: skip

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        parent_id: int,
        name: str,
        kind: SpanKindName,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a root
        self.name = name
        self.kind: SpanKindName = kind
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.status: SpanStatusName = "unset"
        self.status_message = ""
        self.attributes = attributes

    def __repr__(self) -> str:
        return (
            f"SpanData({self.name!r}, {self.kind}, trace={self.trace_id:032x}, "
            f"span={self.span_id:016x}, parent={self.parent_id:016x}, {self.status})"
        )


Sink = Callable[[SpanData], None]


class Tracing:
    """The installed sampling ratio and sink (one per process)."""

    __slots__ = ("bound", "ratio", "sink")

    def __init__(self, ratio: float, sink: Sink) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"a sampling ratio is between 0 and 1, got {ratio!r}")
        self.ratio = ratio
        self.bound = round(ratio * (1 << 64))  # as TraceIdRatioBased computes it
        self.sink = sink

    def sample_root(self, trace_id: int) -> bool:
        return trace_id & _RATIO_MASK < self.bound


_active: Tracing | None = None


def install(ratio: float, sink: Sink) -> Tracing | None:
    """Trace shoal's spans in this process from now on; returns what was installed before."""
    return set_active(Tracing(ratio, sink))


def set_active(tracing: Tracing | None) -> Tracing | None:
    """Put ``tracing`` (None: no tracing) in place; returns the previous one, to restore."""
    global _active
    previous, _active = _active, tracing
    return previous


def uninstall() -> None:
    set_active(None)


def active() -> Tracing | None:
    return _active
