"""The telemetry store: round trips, trace assembly, filters, retention, the file itself."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shoal.exceptions import ShoalError, TelemetryError
from shoal.telemetry import (
    AsyncTelemetryStore,
    LogRecord,
    MetricPoint,
    SpanRecord,
    SpanStatus,
    TelemetryStore,
    TraceSummary,
)
from shoal.telemetry._queries import trace_query, traces_query
from shoal.telemetry._schema import SCHEMA_VERSION

SECOND = 1_000_000_000
MS = 1_000_000
NOW = 1_700_000_000.0  # the injected clock's "now", unix seconds
NOW_NS = int(NOW * SECOND)


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def span(
    trace: int,
    span_n: int,
    parent: int | None = None,
    *,
    start: int = NOW_NS,
    ms: float = 1.0,
    service: str = "api",
    name: str = "GET /",
    status: SpanStatus = "ok",
    **extra: Any,
) -> SpanRecord:
    return SpanRecord(
        trace_id=tid(trace),
        span_id=sid(span_n),
        parent_id=None if parent is None else sid(parent),
        name=name,
        kind="server",
        service=service,
        instance=f"{service}-1",
        start_ns=start,
        end_ns=start + int(ms * MS),
        status=status,
        **extra,
    )


def log(
    message: str,
    *,
    at: int = NOW_NS,
    level: str = "info",
    service: str = "api",
    trace: int | None = None,
) -> LogRecord:
    return LogRecord.model_validate(
        {
            "time_ns": at,
            "service": service,
            "instance": f"{service}-1",
            "level": level,
            "message": message,
            "trace_id": None if trace is None else tid(trace),
            "span_id": None if trace is None else sid(1),
        }
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "app" / ".shoal" / "telemetry.db"


@pytest.fixture
def store(path: Path) -> Iterator[TelemetryStore]:
    with TelemetryStore(path, clock=lambda: NOW) as opened:
        yield opened


# -- records ------------------------------------------------------------------------------


def test_span_round_trips_through_the_store_and_json(store: TelemetryStore) -> None:
    original = span(
        1,
        1,
        status="error",
        status_message="boom",
        attributes={"http.status_code": 500, "retry": True, "ratio": 0.5, "route": "/x"},
    )
    store.add_spans([original])
    (stored,) = store.trace(tid(1))
    assert stored == original
    assert type(stored.attributes["retry"]) is bool
    assert type(stored.attributes["http.status_code"]) is int
    assert SpanRecord.model_validate(original.model_dump(mode="json")) == original


def test_log_and_metric_round_trip(store: TelemetryStore) -> None:
    record = LogRecord(
        time_ns=NOW_NS,
        service="api",
        instance="api-1",
        level="warning",
        message="slow",
        trace_id=tid(3),
        span_id=sid(4),
        fields={"ms": 812, "cached": False},
    )
    points = [
        MetricPoint(
            time_ns=NOW_NS + i * SECOND,
            name="http.server.request.duration.p99",
            service="api",
            labels={"route": "/x", "method": "GET"},
            value=0.25 * i,
        )
        for i in range(3)
    ]
    store.add_logs([record])
    store.add_metrics(points)
    assert store.logs() == [record]
    assert store.metrics("http.server.request.duration.p99") == points  # oldest first
    assert store.metrics("http.server.request.duration.p99", limit=2) == points[1:]
    assert store.metrics("http.server.request.duration.p99", service="web") == []
    assert LogRecord.model_validate(record.model_dump(mode="json")) == record


@pytest.mark.parametrize(
    "change",
    [
        {"trace_id": "AB" * 16},
        {"trace_id": "ab" * 15},
        {"span_id": "xyz0" * 4},
        {"parent_id": "1"},
        {"end_ns": NOW_NS - 1},
        {"kind": "sideways"},
    ],
)
def test_span_fields_are_validated(change: dict[str, Any]) -> None:
    fields = span(1, 1).model_dump() | change
    with pytest.raises(ValidationError):
        SpanRecord.model_validate(fields)


def test_records_are_frozen() -> None:
    with pytest.raises(ValidationError):
        span(1, 1).name = "other"


def test_duplicates_are_ignored(store: TelemetryStore) -> None:
    spans = [span(1, 1), span(1, 2, 1)]
    point = MetricPoint(time_ns=NOW_NS, name="up", service="api", labels={"a": "1"}, value=1)
    assert store.add_spans(spans) == 2
    assert store.add_spans(spans) == 0
    assert store.add_logs([log("hi"), log("hi")]) == 1
    assert store.add_logs([log("hi")]) == 0
    assert store.add_metrics([point]) == 1
    assert store.add_metrics([point]) == 0
    assert len(store.trace(tid(1))) == 2
    assert store.traces()[0].span_count == 2
    assert len(store.logs()) == 1
    assert len(store.metrics("up")) == 1


# -- traces -------------------------------------------------------------------------------


def test_root_span_arriving_last_becomes_the_root(store: TelemetryStore) -> None:
    store.add_spans([span(1, 2, 1, start=NOW_NS + 2 * MS, service="orders", name="query")])
    assert store.traces()[0].root_service == "orders"  # all there is so far
    store.add_spans([span(1, 3, 2, start=NOW_NS + 3 * MS, service="db", status="error")])
    store.add_spans([span(1, 1, start=NOW_NS, ms=10, service="gateway", name="GET /orders")])
    assert [s.span_id for s in store.trace(tid(1))] == [sid(1), sid(2), sid(3)]
    assert store.traces() == [
        TraceSummary(
            trace_id=tid(1),
            root_service="gateway",
            root_name="GET /orders",
            start_ns=NOW_NS,
            duration_ms=10.0,
            span_count=3,
            error_count=1,
            services=["db", "gateway", "orders"],
        )
    ]


def test_an_orphan_parent_id_makes_the_earliest_orphan_the_root(store: TelemetryStore) -> None:
    # the caller outside the mesh sent parent 99, which the store never sees
    store.add_spans(
        [
            span(1, 3, 2, start=NOW_NS + 5 * MS, service="db"),
            span(1, 2, 99, start=NOW_NS + 1 * MS, service="orders", name="POST /o"),
            span(1, 4, 98, start=NOW_NS + 2 * MS, service="audit"),
        ]
    )
    (summary,) = store.traces()
    assert (summary.root_service, summary.root_name) == ("orders", "POST /o")


def test_unknown_trace_is_empty(store: TelemetryStore) -> None:
    assert store.trace(tid(42)) == []
    assert store.traces() == []


@pytest.fixture
def five_traces(store: TelemetryStore) -> TelemetryStore:
    """Traces 1..5, one second apart; 2 and 4 failed; 3 is slow; 4 touches "db"."""
    for n in range(1, 6):
        start = NOW_NS + n * SECOND
        spans = [span(n, 1, start=start, ms=500 if n == 3 else 5, service="gateway")]
        spans.append(
            span(
                n,
                2,
                1,
                start=start + MS,
                service="db" if n == 4 else "orders",
                status="error" if n in (2, 4) else "ok",
            )
        )
        store.add_spans(spans)
    return store


def ids(summaries: list[TraceSummary]) -> list[int]:
    return [int(s.trace_id, 16) for s in summaries]


def test_traces_are_newest_first_and_limited(five_traces: TelemetryStore) -> None:
    assert ids(five_traces.traces()) == [5, 4, 3, 2, 1]
    assert ids(five_traces.traces(limit=2)) == [5, 4]


def test_traces_filter_by_a_service_anywhere_in_the_trace(five_traces: TelemetryStore) -> None:
    assert ids(five_traces.traces(service="db")) == [4]
    assert ids(five_traces.traces(service="orders", limit=3)) == [5, 3, 2]
    assert five_traces.traces(service="nobody") == []


def test_traces_filter_by_errors_duration_and_time(five_traces: TelemetryStore) -> None:
    assert ids(five_traces.traces(errors_only=True)) == [4, 2]
    assert ids(five_traces.traces(min_duration_ms=100)) == [3]
    assert ids(five_traces.traces(min_duration_ms=5)) == [5, 4, 3, 2, 1]
    since, until = NOW_NS + 2 * SECOND, NOW_NS + 4 * SECOND
    # since inclusive, until exclusive
    assert ids(five_traces.traces(since_ns=since, until_ns=until)) == [3, 2]
    assert ids(five_traces.traces(since_ns=since)) == [5, 4, 3, 2]
    assert ids(five_traces.traces(until_ns=until)) == [3, 2, 1]
    in_window = five_traces.traces(
        service="orders", errors_only=True, since_ns=since, until_ns=until
    )
    assert ids(in_window) == [2]


def test_negative_limit_is_refused(store: TelemetryStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.traces(limit=-1)


# -- logs ---------------------------------------------------------------------------------


@pytest.fixture
def some_logs(store: TelemetryStore) -> TelemetryStore:
    store.add_logs(
        [
            log("starting up", at=NOW_NS + 1, level="debug"),
            log("GET /orders 200", at=NOW_NS + 2, trace=7),
            log("Slow query on ÜBERSICHT", at=NOW_NS + 3, level="warning", service="db", trace=7),
            log("connection refused", at=NOW_NS + 4, level="error", trace=8),
            log("out of memory", at=NOW_NS + 5, level="critical", service="db"),
        ]
    )
    return store


def messages(records: list[LogRecord]) -> list[str]:
    return [r.message for r in records]


def test_logs_are_newest_first(some_logs: TelemetryStore) -> None:
    assert messages(some_logs.logs(limit=2)) == ["out of memory", "connection refused"]
    assert len(some_logs.logs()) == 5


def test_logs_level_is_a_minimum(some_logs: TelemetryStore) -> None:
    assert messages(some_logs.logs(level="warning")) == [
        "out of memory",
        "connection refused",
        "Slow query on ÜBERSICHT",
    ]
    assert len(some_logs.logs(level="debug")) == 5
    with pytest.raises(ValueError, match="level"):
        some_logs.logs(level="loud")  # type: ignore[arg-type]


def test_logs_text_is_a_case_insensitive_substring(some_logs: TelemetryStore) -> None:
    assert messages(some_logs.logs(text="GET /ORDERS")) == ["GET /orders 200"]
    assert messages(some_logs.logs(text="übersicht")) == ["Slow query on ÜBERSICHT"]
    assert some_logs.logs(text="50%_") == []  # no LIKE wildcards


def test_logs_filter_by_trace_service_and_time(some_logs: TelemetryStore) -> None:
    assert messages(some_logs.logs(trace_id=tid(7))) == [
        "Slow query on ÜBERSICHT",
        "GET /orders 200",
    ]
    assert messages(some_logs.logs(service="db", level="error")) == ["out of memory"]
    assert messages(some_logs.logs(since_ns=NOW_NS + 4)) == [
        "out of memory",
        "connection refused",
    ]


def test_services_are_those_seen_in_spans_and_logs(store: TelemetryStore) -> None:
    store.add_spans([span(1, 1, service="gateway"), span(1, 2, 1, service="orders")])
    store.add_logs([log("hi", service="worker")])
    store.add_metrics([MetricPoint(time_ns=NOW_NS, name="up", service="metrics-only", value=1)])
    assert store.services() == ["gateway", "orders", "worker"]


# -- retention ----------------------------------------------------------------------------


def test_retention_by_age_deletes_only_what_is_older(path: Path) -> None:
    now = [NOW]
    hour = 3600 * SECOND
    with TelemetryStore(path, max_age=3600, clock=lambda: now[0]) as store:
        store.add_spans(
            [
                span(1, 1, start=NOW_NS - 3 * hour, service="old"),
                # trace 2 began long ago but its last span is recent: kept whole
                span(2, 1, start=NOW_NS - 3 * hour, service="gateway"),
                span(2, 2, 1, start=NOW_NS - 60 * SECOND, service="orders"),
                span(3, 1, start=NOW_NS - 60 * SECOND, service="gateway"),
            ]
        )
        store.add_logs([log("old", at=NOW_NS - 2 * hour), log("new", at=NOW_NS - SECOND)])
        store.add_metrics(
            [
                MetricPoint(time_ns=NOW_NS - 2 * hour, name="up", service="api", value=1),
                MetricPoint(time_ns=NOW_NS - SECOND, name="up", service="api", value=2),
            ]
        )
        assert store.enforce_retention() == 3  # trace 1's span, a log, a point
        assert ids(store.traces()) == [3, 2]
        assert len(store.trace(tid(2))) == 2
        assert messages(store.logs()) == ["new"]
        assert [p.value for p in store.metrics("up")] == [2]
        assert store.services() == ["api", "gateway", "orders"]

        now[0] += 2 * 3600  # two hours later everything is past max_age
        assert store.enforce_retention() == 5
        assert store.traces() == []
        assert store.services() == []


def test_retention_within_limits_deletes_nothing(store: TelemetryStore) -> None:
    store.add_spans([span(1, 1)])
    store.add_logs([log("hi")])
    assert store.enforce_retention() == 0
    assert store.enforce_retention() == 0
    assert len(store.traces()) == 1


def test_retention_by_size_shrinks_below_max_bytes_and_keeps_the_newest(path: Path) -> None:
    max_bytes = 400_000
    with TelemetryStore(path, max_bytes=max_bytes, clock=lambda: NOW) as store:
        n = 0
        while store.size_bytes() <= max_bytes * 1.5:
            batch = []
            for _ in range(50):
                n += 1
                start = NOW_NS - 3600 * SECOND + n * MS
                batch += [span(n, 1, start=start), span(n, 2, 1, start=start + 1, service="db")]
            store.add_spans(batch)
            store.add_logs([log(f"line {n}", at=NOW_NS - 3600 * SECOND + n * MS)])
        deleted = store.enforce_retention()
        assert deleted > 0
        assert store.size_bytes() <= max_bytes
        assert path.stat().st_size <= max_bytes  # handed back to the file system
        kept = store.traces(limit=100_000)
        assert kept[0].trace_id == tid(n)  # the newest is kept
        assert store.trace(tid(1)) == []  # the oldest went, whole
        assert all(s.span_count == 2 for s in kept)
        assert store.logs(limit=1)[0].message == f"line {n}"


# -- the file -----------------------------------------------------------------------------


def test_data_survives_close_and_reopen(path: Path) -> None:
    with TelemetryStore(path) as store:
        store.add_spans([span(1, 1), span(1, 2, 1, service="db")])
        store.add_logs([log("before down")])
    with TelemetryStore(path) as again:
        assert len(again.trace(tid(1))) == 2
        assert again.traces()[0].services == ["api", "db"]
        assert messages(again.logs()) == ["before down"]
        assert again.add_spans([span(1, 1)]) == 0


def test_file_and_folder_are_owner_only(path: Path) -> None:
    with TelemetryStore(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_file_of_a_newer_schema_is_refused(path: Path) -> None:
    TelemetryStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(TelemetryError, match=f"schema version {SCHEMA_VERSION + 1}") as caught:
        TelemetryStore(path)
    assert str(path) in str(caught.value)
    assert "upgrade shoal" in str(caught.value)


@pytest.fixture
def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    return path


def test_corrupt_file_is_refused_with_advice(corrupt: Path) -> None:
    with pytest.raises(TelemetryError, match="delete the file") as caught:
        TelemetryStore(corrupt)
    assert str(corrupt) in str(caught.value)
    assert isinstance(caught.value, ShoalError)


def test_closed_store_raises(path: Path) -> None:
    store = TelemetryStore(path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(TelemetryError, match="closed"):
        store.traces()


def test_queries_use_the_indexes_at_fifty_thousand_spans(store: TelemetryStore) -> None:
    """Not a timing: the plans must walk an index, so they stay fast as the file grows."""
    for batch in range(100):
        spans = []
        for i in range(50):
            n = batch * 50 + i + 1
            start = NOW_NS + n * MS
            spans += [
                span(n, k + 1, k or None, start=start + k, service=f"s{k % 3}") for k in range(10)
            ]
        store.add_spans(spans)
    assert len(store.trace(tid(4321))) == 10
    assert ids(store.traces(service="s2", limit=3)) == [5000, 4999, 4998]

    conn = sqlite3.connect(store.path)
    try:

        def plan(query: tuple[str, list[Any]]) -> str:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {query[0]}", query[1]).fetchall()
            return "\n".join(row[-1] for row in rows)

        assert "USING INDEX spans_by_trace" in plan(trace_query(tid(4321)))

        def listing(service: str | None) -> tuple[str, list[Any]]:
            return traces_query(
                service=service,
                since_ns=None,
                until_ns=None,
                errors_only=False,
                min_duration_ms=None,
                limit=50,
            )

        by_service = plan(listing("s1"))
        assert "INDEX trace_services_by_service" in by_service
        assert "TEMP B-TREE" not in by_service  # read in order, stops at the limit
        newest = plan(listing(None))
        assert "traces_by_start" in newest
        assert "TEMP B-TREE" not in newest
    finally:
        conn.close()


# -- the asyncio facade -------------------------------------------------------------------


async def test_async_store_runs_every_call_on_one_worker_thread(path: Path) -> None:
    threads: set[str] = set()

    def clock() -> float:
        threads.add(threading.current_thread().name)
        return NOW

    async with AsyncTelemetryStore(path, clock=clock) as store:
        assert await store.add_spans([span(1, 1), span(1, 2, 1)]) == 2
        await store.add_logs([log("hi", trace=1)])
        await store.add_metrics([MetricPoint(time_ns=NOW_NS, name="up", service="api", value=1)])
        results = await asyncio.gather(store.trace(tid(1)), store.traces(), store.services())
        assert len(results[0]) == 2
        assert ids(results[1]) == [1]
        assert results[2] == ["api"]
        assert messages(await store.logs(trace_id=tid(1))) == ["hi"]
        assert len(await store.metrics("up")) == 1
        assert await store.enforce_retention() == 0
        assert await store.size_bytes() > 0
    assert len(threads) == 1
    (name,) = threads
    assert name.startswith("shoal-telemetry")
    assert name != threading.current_thread().name


async def test_async_store_enforces_retention_in_the_background(path: Path) -> None:
    now = [NOW]
    store = AsyncTelemetryStore(path, max_age=60, clock=lambda: now[0], retention_interval=0.01)
    await store.start()
    try:
        await store.add_spans([span(1, 1)])
        now[0] += 3600
        for _ in range(1000):  # at most ten seconds
            if not await store.traces():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("retention did not run in the background")
    finally:
        await store.aclose()
    await store.aclose()  # idempotent


async def test_async_store_must_be_started(path: Path) -> None:
    store = AsyncTelemetryStore(path)
    with pytest.raises(TelemetryError, match="not started"):
        await store.traces()
    async with store:
        with pytest.raises(TelemetryError, match="already started"):
            await store.start()
    with pytest.raises(TelemetryError, match="not started"):
        await store.add_spans([span(1, 1)])


async def test_async_store_reports_a_corrupt_file(corrupt: Path) -> None:
    store = AsyncTelemetryStore(corrupt)
    with pytest.raises(TelemetryError, match="delete the file"):
        await store.start()
    await store.aclose()
