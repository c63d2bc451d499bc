"""The SQL of the telemetry store's queries, and records to rows and back. No I/O here.

The query builders are functions, not store methods, so a test can ask SQLite for
their plans and check that they walk an index.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from shoal.telemetry._records import LEVELS, LogLevel, LogRecord, SpanRecord, TraceSummary

__all__ = [
    "LOG_COLUMNS",
    "SPAN_COLUMNS",
    "Query",
    "check_limit",
    "contains",
    "dumps",
    "failures_query",
    "labels_json",
    "log_from_row",
    "log_row",
    "logs_query",
    "span_from_row",
    "span_row",
    "summary_from_row",
    "trace_query",
    "traces_query",
]

_LEVEL_NAMES: dict[int, LogLevel] = {number: name for name, number in LEVELS.items()}
_SPAN_FIELDS = (
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "kind",
    "service",
    "instance",
    "start_ns",
    "end_ns",
    "status",
    "status_message",
    "attributes",
)
SPAN_COLUMNS = ", ".join(_SPAN_FIELDS)
LOG_COLUMNS = "time_ns, service, instance, level, message, trace_id, span_id, fields"
_SUMMARY_COLUMNS = (
    "t.trace_id, t.root_service, t.root_name, t.start_ns, t.end_ns, "
    "t.span_count, t.error_count, t.services"
)
Query = tuple[str, list[Any]]


# -- queries -----------------------------------------------------------------------------------


def trace_query(trace_id: str) -> Query:
    return (
        f"SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
        [trace_id],
    )


def traces_query(
    *,
    service: str | None,
    since_ns: int | None,
    until_ns: int | None,
    errors_only: bool,
    min_duration_ms: float | None,
    limit: int,
) -> Query:
    check_limit(limit)
    where: list[str] = []
    params: list[Any] = []
    if service is None:
        source, alias = "traces AS t", "t"
    else:
        # trace_services repeats the trace's start, so its index walks one service in order
        source, alias = "trace_services AS s JOIN traces AS t ON t.trace_id = s.trace_id", "s"
        where.append("s.service = ?")
        params.append(service)
    if since_ns is not None:
        where.append(f"{alias}.start_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        where.append(f"{alias}.start_ns < ?")
        params.append(until_ns)
    if errors_only:
        where.append("t.error_count > 0")
    if min_duration_ms is not None:
        where.append("t.end_ns - t.start_ns >= ?")
        params.append(math.ceil(min_duration_ms * 1e6))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM {source} {clause} "
        f"ORDER BY {alias}.start_ns DESC, {alias}.trace_id DESC LIMIT ?"
    )
    return sql, [*params, limit]


def failures_query(limit: int) -> Query:
    """Failed spans that say why (``shoal.reason``), newest end first, on the failed-span index."""
    check_limit(limit)
    sql = (
        f"SELECT {SPAN_COLUMNS} FROM spans WHERE status = 'error' "
        "AND json_extract(attributes, '$.\"shoal.reason\"') IS NOT NULL "
        "ORDER BY end_ns DESC, rowid DESC LIMIT ?"
    )
    return sql, [limit]


def logs_query(
    *,
    service: str | None,
    level: LogLevel | None,
    text: str | None,
    trace_id: str | None,
    since_ns: int | None,
    limit: int,
) -> Query:
    check_limit(limit)
    where: list[str] = []
    params: list[Any] = []
    if service is not None:
        where.append("service = ?")
        params.append(service)
    if level is not None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
        where.append("level >= ?")
        params.append(LEVELS[level])
    if trace_id is not None:
        where.append("trace_id = ?")
        params.append(trace_id)
    if since_ns is not None:
        where.append("time_ns >= ?")
        params.append(since_ns)
    if text:
        where.append("shoal_contains(message, ?)")
        params.append(text.casefold())
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {LOG_COLUMNS} FROM logs {clause} ORDER BY time_ns DESC, rowid DESC LIMIT ?"
    return sql, [*params, limit]


# -- rows and records ----------------------------------------------------------------------


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def labels_json(labels: dict[str, str]) -> str:
    return dumps(labels)  # sorted keys: one spelling per series, so duplicates are found


def contains(haystack: str | None, folded_needle: str) -> bool:
    # a Python function rather than LIKE: SQLite folds the case of ASCII letters only
    return haystack is not None and folded_needle in haystack.casefold()


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")


def span_row(s: SpanRecord) -> tuple[Any, ...]:
    return (
        s.trace_id,
        s.span_id,
        s.parent_id,
        s.name,
        s.kind,
        s.service,
        s.instance,
        s.start_ns,
        s.end_ns,
        s.status,
        s.status_message,
        dumps(s.attributes),
    )


def span_from_row(row: tuple[Any, ...]) -> SpanRecord:
    fields = dict(zip(_SPAN_FIELDS, row, strict=True))
    fields["attributes"] = json.loads(fields["attributes"])
    return SpanRecord.model_validate(fields)


def log_row(r: LogRecord) -> tuple[Any, ...]:
    # the key identifies the record as delivered, so a second delivery is recognised
    digest = hashlib.blake2b(r.model_dump_json().encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    return (
        key,
        r.time_ns,
        r.service,
        r.instance,
        LEVELS[r.level],
        r.message,
        r.trace_id,
        r.span_id,
        dumps(r.fields),
    )


def log_from_row(row: tuple[Any, ...]) -> LogRecord:
    time_ns, service, instance, level, message, trace_id, span_id, fields = row
    return LogRecord(
        time_ns=time_ns,
        service=service,
        instance=instance,
        level=_LEVEL_NAMES.get(level, "info"),
        message=message,
        trace_id=trace_id,
        span_id=span_id,
        fields=json.loads(fields),
    )


def summary_from_row(row: tuple[Any, ...]) -> TraceSummary:
    trace_id, root_service, root_name, start, end, span_count, error_count, services = row
    return TraceSummary(
        trace_id=trace_id,
        root_service=root_service,
        root_name=root_name,
        start_ns=start,
        duration_ms=(end - start) / 1e6,
        span_count=span_count,
        error_count=error_count,
        services=json.loads(services),
    )
