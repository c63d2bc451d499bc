"""What the telemetry store keeps: spans, logs, metric points and trace summaries. No I/O here.

The records also travel as JSON over NATS from the instances to the supervisor, so
their fields are plain JSON values (ids as lowercase hex, times as integer unix
nanoseconds) and ``model_dump(mode="json")`` round-trips them exactly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "LEVELS",
    "AttributeValue",
    "LogLevel",
    "LogRecord",
    "MetricPoint",
    "SpanId",
    "SpanKind",
    "SpanRecord",
    "SpanStatus",
    "TraceId",
    "TraceSummary",
]

TraceId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
"""A W3C trace id: 32 lowercase hex digits."""
SpanId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
"""A W3C span id: 16 lowercase hex digits."""
UnixNanos = Annotated[int, Field(ge=0)]

# bool is listed, and pydantic's smart unions keep True a bool and 1 an int.
AttributeValue = str | int | float | bool
SpanKind = Literal["server", "client", "internal", "producer", "consumer"]
SpanStatus = Literal["unset", "ok", "error"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

LEVELS: dict[LogLevel, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
"""Severity of each level, as in :mod:`logging`, so "at least warning" is a comparison."""

_RECORD = ConfigDict(frozen=True, extra="ignore")
# extra="ignore": a newer instance may send fields this supervisor does not know yet.


class SpanRecord(BaseModel):
    """One finished span: a timed operation of one instance within a trace."""

    model_config = _RECORD

    trace_id: TraceId
    span_id: SpanId
    parent_id: SpanId | None = None
    """The span this one was caused by; None for a trace's first span."""
    name: str
    kind: SpanKind = "internal"
    service: str
    instance: str
    start_ns: UnixNanos
    end_ns: UnixNanos
    status: SpanStatus = "unset"
    status_message: str = ""
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> SpanRecord:
        if self.end_ns < self.start_ns:
            raise ValueError(f"end_ns ({self.end_ns}) is before start_ns ({self.start_ns})")
        return self

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class LogRecord(BaseModel):
    """One log line of an instance, tied to the span it was written in (if any)."""

    model_config = _RECORD

    time_ns: UnixNanos
    service: str
    instance: str
    level: LogLevel
    message: str
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    fields: dict[str, AttributeValue] = Field(default_factory=dict)


class MetricPoint(BaseModel):
    """One downsampled value of one series (``name`` + ``service`` + ``labels``) at one time.

    Counters are stored as cumulative values; histograms as separate series per
    summary (``http.server.request.duration.p99``), so every point is one float.
    """

    model_config = _RECORD

    time_ns: UnixNanos
    name: str
    service: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class TraceSummary(BaseModel):
    """One line of a trace list: where the trace began, how long it took, whether it failed."""

    model_config = _RECORD

    trace_id: TraceId
    root_service: str
    root_name: str
    start_ns: UnixNanos
    duration_ms: float
    span_count: int
    error_count: int
    services: list[str]
    """Every service with a span in the trace, sorted."""
