"""Persisted telemetry: traces, logs and downsampled metrics under ``DIR/.shoal/``.

Records arrive in batches (over NATS, at least once) and go into one SQLite file
that outlasts ``shoal down``; retention by age and size bounds it. The supervisor
uses :class:`AsyncTelemetryStore`; :class:`TelemetryStore` is its synchronous core.
"""

from __future__ import annotations

from shoal.telemetry._async import AsyncTelemetryStore as AsyncTelemetryStore
from shoal.telemetry._records import LogLevel as LogLevel
from shoal.telemetry._records import LogRecord as LogRecord
from shoal.telemetry._records import MetricPoint as MetricPoint
from shoal.telemetry._records import SpanKind as SpanKind
from shoal.telemetry._records import SpanRecord as SpanRecord
from shoal.telemetry._records import SpanStatus as SpanStatus
from shoal.telemetry._records import TraceSummary as TraceSummary
from shoal.telemetry._store import TelemetryStore as TelemetryStore

__all__ = [
    "AsyncTelemetryStore",
    "LogLevel",
    "LogRecord",
    "MetricPoint",
    "SpanKind",
    "SpanRecord",
    "SpanStatus",
    "TelemetryStore",
    "TraceSummary",
]
