"""Recent explained failures: failed spans that carry ``shoal.reason``, newest first."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shoal.telemetry import AsyncTelemetryStore, SpanRecord, SpanStatus, TelemetryStore
from shoal.telemetry._queries import failures_query
from shoal.telemetry._records import AttributeValue
from shoal.telemetry._schema import SCHEMA_VERSION

SECOND = 1_000_000_000
NOW_NS = 1_700_000_000 * SECOND


def _span(
    n: int,
    attributes: dict[str, AttributeValue] | None = None,
    *,
    status: SpanStatus = "error",
    at: int = 0,
) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        name=f"POST /step-{n}",
        kind="client",
        service="orders",
        instance="orders-1",
        start_ns=NOW_NS + at * SECOND,
        end_ns=NOW_NS + at * SECOND + 5_000_000,
        status=status,
        status_message="went wrong" if status == "error" else "",
        attributes=attributes or {},
    )


@pytest.fixture
def store(tmp_path: Path) -> TelemetryStore:
    return TelemetryStore(tmp_path / "telemetry.db", clock=lambda: NOW_NS / SECOND)


def test_failures_are_error_spans_with_a_reason_newest_first(store: TelemetryStore) -> None:
    with store:
        store.add_spans(
            [
                _span(1, {"shoal.reason": "deadline-exceeded"}, at=1),
                _span(2, at=2),  # failed, but no reason given: not explained
                _span(3, {"shoal.reason": "retried"}, status="ok", at=3),  # not a failure
                _span(4, {"shoal.reason": "denied:payments-only"}, at=4),
                _span(5, {"shoal.reason": "shed", "http.response.status_code": 503}, at=5),
            ]
        )
        failures = store.failures(limit=10)
        assert [s.span_id for s in failures] == [f"{n:016x}" for n in (5, 4, 1)]
        assert failures[0].attributes["http.response.status_code"] == 503
        assert [s.span_id for s in store.failures(limit=2)] == [f"{n:016x}" for n in (5, 4)]
        assert store.failures(limit=0) == []


def test_negative_limit_is_refused(store: TelemetryStore) -> None:
    with store, pytest.raises(ValueError, match="limit"):
        store.failures(limit=-1)


def test_failures_query_walks_the_failed_span_index(store: TelemetryStore) -> None:
    store.close()
    conn = sqlite3.connect(store.path)
    try:
        sql, params = failures_query(20)
        plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        conn.close()
    assert "USING INDEX spans_failed_by_end" in plan
    assert "TEMP B-TREE" not in plan  # the index gives the order: no sort of every failure


def test_a_version_1_file_gets_the_index_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    with TelemetryStore(path) as store:
        store.add_spans([_span(1, {"shoal.reason": "shed"})])
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX spans_failed_by_end")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with TelemetryStore(path) as store:
        assert [s.span_id for s in store.failures()] == [f"{1:016x}"]
    conn = sqlite3.connect(path)
    try:
        indexes: list[Any] = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'spans_failed_by_end'"
        ).fetchall()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
    assert indexes == [("spans_failed_by_end",)]
    assert version == SCHEMA_VERSION


async def test_the_async_store_mirrors_failures(tmp_path: Path) -> None:
    async with AsyncTelemetryStore(
        tmp_path / "telemetry.db", clock=lambda: NOW_NS / SECOND
    ) as store:
        await store.add_spans([_span(1, {"shoal.reason": "no-healthy-instance"})])
        assert [s.attributes["shoal.reason"] for s in await store.failures(5)] == [
            "no-healthy-instance"
        ]
