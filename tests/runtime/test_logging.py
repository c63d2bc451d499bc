"""An instance's JSON log lines: names, level, the current span's ids, extras, exceptions."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shoal.exceptions import ServeError
from shoal.runtime._logging import (
    LEVEL_ENV,
    JsonFormatter,
    install_logging,
    level_name,
    resolve_level,
)

FORMATTER = JsonFormatter("shop", "orders", "orders-1")


def _record(
    level: int = logging.INFO,
    msg: str = "order %s placed",
    args: tuple[Any, ...] = ("ord-1",),
    **extra: Any,
) -> logging.LogRecord:
    record = logging.getLogger("orders.api").makeRecord(
        "orders.api", level, __file__, 1, msg, args, None, extra=extra or None
    )
    record.created = 1714564800.25  # 2024-05-01T12:00:00.250Z
    record.msecs = 250.0
    return record


def _line(record: logging.LogRecord) -> dict[str, Any]:
    text = FORMATTER.format(record)
    assert "\n" not in text  # one line, whatever the message holds
    data: dict[str, Any] = json.loads(text)
    return data


def test_a_line_carries_time_level_logger_message_and_the_instance() -> None:
    assert _line(_record()) == {
        "time": "2024-05-01T12:00:00.250Z",
        "level": "info",
        "logger": "orders.api",
        "message": "order ord-1 placed",
        "app": "shop",
        "service": "orders",
        "instance": "orders-1",
    }


def test_levels_are_the_five_lowercase_words_custom_ones_rounded_down() -> None:
    for number, word in ((10, "debug"), (20, "info"), (30, "warning"), (40, "error")):
        assert _line(_record(level=number))["level"] == word
    assert _line(_record(level=logging.CRITICAL))["level"] == "critical"
    assert level_name(5) == "debug"  # uvicorn's TRACE
    assert level_name(25) == "info"
    assert level_name(60) == "critical"


def test_outside_a_span_there_are_no_trace_ids() -> None:
    data = _line(_record())
    assert "trace_id" not in data
    assert "span_id" not in data


def test_inside_a_span_the_line_carries_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")  # in memory; not the global provider
    with tracer.start_as_current_span("POST /") as span:
        data = _line(_record())
        ctx = span.get_span_context()
    assert data["trace_id"] == format(ctx.trace_id, "032x")
    assert data["span_id"] == format(ctx.span_id, "016x")
    assert re.fullmatch(r"[0-9a-f]{32}", data["trace_id"])


def test_a_remote_span_context_counts_too_and_an_invalid_one_does_not() -> None:
    ctx = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(ctx)):
        data = _line(_record())
    assert data["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert data["span_id"] == "00f067aa0ba902b7"
    with trace.use_span(trace.INVALID_SPAN):
        assert "trace_id" not in _line(_record())


def test_scalar_extras_become_keys_others_are_left_out() -> None:
    data = _line(_record(order_id="ord-1", quantity=2, total=9.5, paid=True, items=["tee"]))
    assert data["order_id"] == "ord-1"
    assert data["quantity"] == 2
    assert data["total"] == 9.5
    assert data["paid"] is True
    assert "items" not in data  # not a scalar
    data = _line(_record(nothing=None, weird=float("nan")))  # NaN is not JSON
    assert "nothing" not in data
    assert "weird" not in data


def test_an_extra_cannot_replace_the_names_of_the_instance() -> None:
    data = _line(_record(service="impostor", trace_id="f" * 32))
    assert data["service"] == "orders"
    assert data["trace_id"] == "f" * 32  # no span is current: the extra is all there is


def test_an_exception_comes_as_its_traceback_in_exc() -> None:
    try:
        raise ValueError("no such product: 'hat'")
    except ValueError:
        record = _record(level=logging.ERROR, msg="order failed", args=())
        record.exc_info = sys.exc_info()
    data = _line(record)
    assert data["message"] == "order failed"
    assert data["exc"].startswith("Traceback (most recent call last):")
    assert data["exc"].endswith("ValueError: no such product: 'hat'")


def test_non_ascii_and_quotes_survive() -> None:
    data = _line(_record(msg='Grüße "%s"\nzweite Zeile', args=("ok",)))
    assert data["message"] == 'Grüße "ok"\nzweite Zeile'


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """install_logging changes the root logger and uvicorn's: put them back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    uvicorn = logging.getLogger("uvicorn.error")
    saved_uvicorn = uvicorn.handlers[:], uvicorn.propagate, uvicorn.level
    uvicorn.setLevel(logging.NOTSET)  # an earlier test's uvicorn.Config may have set one
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        uvicorn.handlers[:], uvicorn.propagate, uvicorn.level = saved_uvicorn


@pytest.mark.usefixtures("clean_logging")
def test_install_logging_routes_the_root_and_uvicorn_loggers_to_one_json_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.error").propagate = False  # as uvicorn's own config leaves it
    out = io.StringIO()
    install_logging("shop", "orders", "orders-1", stream=out)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("some.lib").debug("not at info")
    logging.getLogger("some.lib").warning("careful")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["logger"], d["level"], d["message"]) for d in lines] == [
        ("uvicorn.error", "info", "Started server process [42]"),
        ("some.lib", "warning", "careful"),
    ]
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("clean_logging")
def test_the_level_comes_from_shoal_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEVEL_ENV, "DEBUG")
    out = io.StringIO()
    install_logging("shop", "orders", "orders-1", stream=out)
    logging.getLogger("some.lib").debug("now shown")
    assert json.loads(out.getvalue())["message"] == "now shown"
    monkeypatch.setenv(LEVEL_ENV, "warn")
    assert resolve_level() == logging.WARNING
    monkeypatch.delenv(LEVEL_ENV)
    assert resolve_level() == logging.INFO
    assert resolve_level("error") == logging.ERROR


def test_a_bad_level_is_a_serve_error_that_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LEVEL_ENV, "loud")
    with pytest.raises(ServeError) as caught:
        resolve_level()
    message = str(caught.value)
    assert "SHOAL_LOG_LEVEL" in message
    assert "'loud'" in message
    assert "debug, info, warning, error, critical" in message
