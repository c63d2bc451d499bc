"""GET /v1/logs: stored log records, filtered, newest first; bad filters are ValueErrors (400)."""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.control._telemetry_api import TELEMETRY_GETS, Query
from shoal.telemetry import AsyncTelemetryStore, LogRecord

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
NOW = time.time_ns() - 60 * 10**9  # recent: retention keeps it


def _record(i: int, **changes: Any) -> LogRecord:
    fields: dict[str, Any] = {
        "time_ns": NOW + i * 1_000_000_000,
        "service": "orders",
        "instance": "orders-1",
        "level": "info",
        "message": f"line {i}",
    }
    return LogRecord(**{**fields, **changes})


@pytest.fixture
async def sup(tmp_path: Path) -> AsyncIterator[Any]:
    store = AsyncTelemetryStore(tmp_path / "telemetry.db")
    await store.start()
    await store.add_logs(
        [
            _record(0),
            _record(1, level="error", message="payment declined", trace_id=TRACE),
            _record(2, service="catalog", instance="catalog-1", level="warning"),
            _record(3, message="Order placed", trace_id=TRACE, span_id="00f067aa0ba902b7"),
        ]
    )
    try:
        yield types.SimpleNamespace(telemetry=types.SimpleNamespace(store=store))
    finally:
        await store.aclose()


async def _get(sup: Any, query: str = "", path: str = "/v1/logs") -> tuple[int, Any]:
    values: dict[str, list[str]] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        values.setdefault(name, []).append(value)
    return await TELEMETRY_GETS["/v1/logs"](sup, path, Query(values))


async def test_records_come_newest_first_as_json(sup: Any) -> None:
    status, body = await _get(sup)
    assert status == 200
    assert [r["message"] for r in body] == ["Order placed", "line 2", "payment declined", "line 0"]
    assert body[0] == _record(
        3, message="Order placed", trace_id=TRACE, span_id="00f067aa0ba902b7"
    ).model_dump(mode="json")


@pytest.mark.parametrize(
    ("query", "messages"),
    [
        ("service=catalog", ["line 2"]),
        ("level=warning", ["line 2", "payment declined"]),
        ("level=ERROR", ["payment declined"]),
        ("text=ORDER", ["Order placed"]),
        (f"trace_id={TRACE.upper()}", ["Order placed", "payment declined"]),
        (f"since_s={(NOW + 1_500_000_000) / 1e9}", ["Order placed", "line 2"]),
        ("limit=1", ["Order placed"]),
        ("service=orders&level=error&trace_id=" + TRACE, ["payment declined"]),
    ],
)
async def test_filters(sup: Any, query: str, messages: list[str]) -> None:
    status, body = await _get(sup, query)
    assert status == 200
    assert [r["message"] for r in body] == messages


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("level=loud", "level must be one of debug, info, warning, error, critical"),
        ("trace_id=abc", "trace_id must be 32 hex digits"),
        ("limit=0", "limit must be between 1 and 5000"),
        ("limit=5001", "limit must be between 1 and 5000"),
        ("since_s=-1", "since_s must be between"),
    ],
)
async def test_bad_filters_are_value_errors_that_say_what_is_allowed(
    sup: Any, query: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        await _get(sup, query)


async def test_not_running_and_unknown_paths(sup: Any) -> None:
    assert (await _get(types.SimpleNamespace(telemetry=None)))[0] == 503
    assert (await _get(sup, path="/v1/logs/x"))[0] == 404
