"""Summarising a trace from its spans, whatever order they arrived in. No I/O here.

Spans reach the store one instance at a time, so a trace is often incomplete for a
while: the root span (the gateway's, say) is the last to finish and so the last to
arrive, and a caller outside the mesh may have handed over a parent id the store
never sees. The root is therefore chosen from what is there each time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from shoal.telemetry._records import SpanRecord, TraceSummary

__all__ = ["SpanOutline", "outline", "root_of", "summarize"]


class SpanOutline(NamedTuple):
    """The columns of a span that a summary needs (the store reads only these)."""

    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_ns: int
    end_ns: int
    status: str


def outline(span: SpanRecord) -> SpanOutline:
    return SpanOutline(
        span.span_id,
        span.parent_id,
        span.name,
        span.service,
        span.start_ns,
        span.end_ns,
        span.status,
    )


def root_of(spans: Sequence[SpanOutline]) -> SpanOutline:
    """The earliest span with no parent or a parent not in ``spans``.

    A cycle of parent ids (a broken producer) leaves no such span; the earliest
    span stands in so a summary always exists.
    """
    if not spans:
        raise ValueError("a trace has at least one span")
    ids = {s.span_id for s in spans}
    heads = [s for s in spans if s.parent_id is None or s.parent_id not in ids]
    return min(heads or spans, key=lambda s: (s.start_ns, s.span_id))


def summarize(trace_id: str, spans: Iterable[SpanOutline]) -> TraceSummary:
    """The summary of one trace; ``spans`` are all of its spans, in any order."""
    spans = list(spans)
    root = root_of(spans)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    return TraceSummary(
        trace_id=trace_id,
        root_service=root.service,
        root_name=root.name,
        start_ns=start,
        duration_ms=(end - start) / 1e6,
        span_count=len(spans),
        error_count=sum(1 for s in spans if s.status == "error"),
        services=sorted({s.service for s in spans}),
    )
