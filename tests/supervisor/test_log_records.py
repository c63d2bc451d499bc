"""Lines of instance output as log records: shoal's JSON, other JSON loggers, plain text."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime._logging import JsonFormatter
from shoal.supervisor._log_records import MAX_MESSAGE, parse_line, plain, render, structured
from shoal.supervisor._telemetry import TelemetryCollector
from shoal.telemetry import LogRecord, TelemetryStore

NOW = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _parse(line: str, stream: Any = "combined") -> LogRecord:
    record = parse_line("orders", "orders-1", stream, line, NOW)
    assert record is not None
    return record


def test_a_line_of_shoal_serve_round_trips() -> None:
    formatter = JsonFormatter("shop", "orders", "orders-1")
    logged = logging.makeLogRecord(
        {
            "name": "orders",
            "levelno": 30,
            "levelname": "WARNING",
            "msg": "low stock: %d",
            "args": (2,),
        }
    )
    logged.created, logged.msecs = 1714564801.5, 500.0
    logged.trace_id, logged.span_id, logged.sku = TRACE, SPAN, "tee"  # as a span would give
    record = _parse(formatter.format(logged))
    assert record == LogRecord(
        time_ns=1_714_564_801_500_000_000,
        service="orders",
        instance="orders-1",
        level="warning",
        message="low stock: 2",
        trace_id=TRACE,
        span_id=SPAN,
        fields={"logger": "orders", "sku": "tee"},
    )


def test_a_foreign_json_line_with_camel_case_ids_and_its_own_words() -> None:
    line = json.dumps(
        {
            "severity": "WARN",
            "msg": "cache miss",
            "timestamp": 1714564802123,  # milliseconds, as pino and winston write them
            "traceId": TRACE.upper(),
            "spanId": SPAN,
            "service": "someone-else",  # the supervisor knows who wrote the line
            "pid": 4242,
            "hit": False,
            "ctx": {"nested": 1},  # not a scalar: left out
        }
    )
    record = _parse(line)
    assert record.level == "warning"
    assert record.message == "cache miss"
    assert record.time_ns == 1_714_564_802_123_000_000
    assert (record.trace_id, record.span_id) == (TRACE, SPAN)
    assert record.service == "orders"
    assert record.fields == {"pid": 4242, "hit": False}


@pytest.mark.parametrize(
    ("extra", "trace_id", "span_id"),
    [
        ({"trace.id": TRACE, "span.id": SPAN}, TRACE, SPAN),  # ECS, dotted
        ({"trace": {"id": TRACE}, "span": {"id": SPAN}}, TRACE, SPAN),  # ECS, nested
        ({"trace_id": "0" * 32, "span_id": "0" * 16}, None, None),  # invalid in W3C
        ({"trace_id": "not-hex", "span_id": 7}, None, None),
    ],
)
def test_trace_and_span_ids_in_their_spellings(
    extra: dict[str, Any], trace_id: str | None, span_id: str | None
) -> None:
    record = _parse(json.dumps({"level": "info", "message": "m", **extra}))
    assert (record.trace_id, record.span_id) == (trace_id, span_id)


@pytest.mark.parametrize(
    ("word", "level"),
    [("debug", "debug"), ("TRACE", "debug"), ("Information", "info"), ("warning", "warning"),
     ("err", "error"), ("fatal", "critical"), ("panic", "critical"), ("loud", "info")],
)  # fmt: skip
def test_level_words_of_other_loggers(word: str, level: str) -> None:
    record = _parse(json.dumps({"level": word, "message": "m"}))
    assert record.level == level
    if word == "loud":  # unknown: info, and the word is kept
        assert record.fields["level"] == "loud"


@pytest.mark.parametrize(
    ("value", "time_ns"),
    [
        ("2024-05-01T12:00:03.250Z", 1_714_564_803_250_000_000),
        ("2024-05-01T14:00:03+02:00", 1_714_564_803_000_000_000),
        (1714564803, 1_714_564_803_000_000_000),  # seconds
        (1714564803.5, 1_714_564_803_500_000_000),
        (1714564803000000, 1_714_564_803_000_000_000),  # microseconds
        (1714564803000000000, 1_714_564_803_000_000_000),  # nanoseconds
        ("yesterday", NOW),
        (-5, NOW),
        (1e300, NOW),
        (True, NOW),
    ],
)
def test_times_of_json_lines(value: Any, time_ns: int) -> None:
    assert _parse(json.dumps({"level": "info", "message": "m", "time": value})).time_ns == time_ns


def test_a_json_line_without_message_or_level_is_plain_text() -> None:
    for line in ('{"level": "error"}', '{"message": "hi"}', "[1, 2]", '{"level": "error", '):
        record = _parse(line)
        assert record.message == line
        assert record.fields == {}
    assert structured("orders", "orders-1", '{"message": "hi"}', NOW) is None


def test_plain_stdout_is_info_whatever_it_says() -> None:
    assert _parse("ERROR: not really", stream="stdout").level == "info"


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("ERROR: cannot connect", "error"),
        ("[warn] disk almost full", "warning"),
        ("WARNING:  shoal.runtime: slow", "warning"),
        ("  critical failure", "critical"),
        ("(debug) x=1", "debug"),
        ("INFO:     Started server process [42]", "info"),
        ("Errors are counted", "info"),  # a word, not a prefix of one
        ("GET /products 200", "info"),
        ("Traceback (most recent call last):", "info"),
    ],
)
def test_plain_stderr_takes_a_leading_level_word(line: str, level: str) -> None:
    assert _parse(line, stream="stderr").level == level
    assert _parse(line, stream="combined").level == level


def test_plain_lines_keep_the_text_and_the_arrival_time() -> None:
    record = _parse("listening on :8000")
    assert (record.message, record.time_ns, record.trace_id, record.fields) == (
        "listening on :8000",
        NOW,
        None,
        {},
    )
    assert plain("orders", "orders-1", "stdout", "   ", NOW) is None
    assert parse_line("orders", "orders-1", "stdout", "", NOW) is None


def test_garbage_is_kept_as_text() -> None:
    line = "\x00\x1b[31m{{{ \ufffd not json }"
    assert _parse(line).message == line
    deep = "[" * 100_000 + "]" * 100_000
    assert _parse("{" + f'"level": "info", "message": {deep}' + "}").level == "info"


def test_a_huge_line_is_cut_and_says_so() -> None:
    record = _parse("x" * 70_000)
    assert record.message.startswith("x" * MAX_MESSAGE)
    assert record.message.endswith("[53616 more characters cut]")
    big = _parse(json.dumps({"level": "error", "message": "y" * 70_000, "blob": "z" * 70_000}))
    assert big.level == "error"
    assert len(big.message) < MAX_MESSAGE + 100
    blob = big.fields["blob"]
    assert isinstance(blob, str)
    assert len(blob) < 5000


def test_render_shows_level_logger_message_and_short_trace_id_then_the_traceback() -> None:
    record = LogRecord(
        time_ns=NOW,
        service="orders",
        instance="orders-1",
        level="error",
        message="order failed",
        trace_id=TRACE,
        span_id=SPAN,
        fields={"logger": "orders", "exc": "Traceback (most recent call last):\nValueError: x"},
    )
    assert render(record) == (
        "ERROR:    orders: order failed  trace=4bf92f35\n"
        "Traceback (most recent call last):\nValueError: x"
    )
    bare = record.model_copy(update={"trace_id": None, "fields": {}, "level": "info"})
    assert render(bare) == "INFO:     order failed"


class _Subscription:
    async def unsubscribe(self) -> None:
        pass


class _Backbone:
    """Enough of a backbone for the collector: its span subscription, which stays idle."""

    def __init__(self) -> None:
        self.nc = self

    async def subscribe(self, subject: str, cb: Any) -> _Subscription:
        return _Subscription()


def _collector(state_dir: Path, **options: Any) -> TelemetryCollector:
    return TelemetryCollector(_Backbone(), "shop", state_dir, **options)  # type: ignore[arg-type]


async def test_the_collector_batches_lines_into_the_store_without_blocking(
    tmp_path: Path,
) -> None:
    collector = _collector(tmp_path, log_interval=0.05)
    await collector.start()
    try:
        line = json.dumps({"level": "error", "message": "payment declined", "trace_id": TRACE})
        shown = collector.log("orders", "orders-1", "combined", line)
        assert shown == "ERROR:    payment declined  trace=4bf92f35"
        assert collector.log("orders", "orders-1", "combined", "plain words") == "plain words"
        assert collector.log("orders", "orders-1", "combined", "") == ""  # shown, not stored
        for _ in range(100):  # 2 s at most
            if collector.logs_stored == 2:
                break
            await asyncio.sleep(0.02)
        records = await collector.store.logs(service="orders")
        assert [(r.level, r.message) for r in records] == [
            ("info", "plain words"),
            ("error", "payment declined"),
        ]
    finally:
        await collector.aclose()


async def test_a_full_queue_drops_the_oldest_and_counts_and_close_writes_the_rest(
    tmp_path: Path,
) -> None:
    collector = _collector(tmp_path, max_log_queue=3, log_interval=60)
    await collector.start()
    for i in range(5):
        collector.log("orders", "orders-1", "stdout", f"line {i}")
    assert collector.logs_dropped == 2
    await collector.aclose()  # the writer has not run yet: closing writes what is queued
    with TelemetryStore(tmp_path / "telemetry.db") as store:
        assert [r.message for r in store.logs()] == ["line 4", "line 3", "line 2"]
