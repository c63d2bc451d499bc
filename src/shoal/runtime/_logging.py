"""An instance's logs: one JSON object per line on stderr, tied to the span being handled.

``shoal serve`` puts one handler on the root logger (uvicorn's loggers propagate to
it too), so everything the app and shoal log comes out as::

    {"time": "2024-05-01T12:00:00.123Z", "level": "info", "logger": "orders",
     "message": "order ord-000001 placed", "app": "shop", "service": "orders",
     "instance": "orders-1", "trace_id": "4bf9...", "span_id": "00f0..."}

``trace_id``/``span_id`` are there while a span is current (a request being
handled); scalar ``extra=`` fields are added as keys; an exception comes as
``exc``, its formatted traceback. The supervisor reads the line back into a
``LogRecord`` (``supervisor._log_records``). The level is ``SHOAL_LOG_LEVEL``
(``debug``, ``info``, ``warning``, ``error``, ``critical``), else ``--log-level``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, TextIO

from opentelemetry import trace

from shoal.exceptions import ServeError

__all__ = ["LEVEL_ENV", "JsonFormatter", "install_logging", "level_name", "resolve_level"]

LEVEL_ENV = "SHOAL_LOG_LEVEL"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# What logging itself puts on a record: any other attribute came from ``extra=``.
_RESERVED = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def level_name(levelno: int) -> str:
    """``logging``'s number as one of the five level words (custom levels round down)."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def resolve_level(default: str = "info") -> int:
    """The level from ``SHOAL_LOG_LEVEL``, else ``default``; ServeError for an unknown word."""
    env = os.environ.get(LEVEL_ENV, "").strip()
    text = (env or default).lower()
    if text == "warn":
        text = "warning"
    if text not in _LEVELS:
        source = LEVEL_ENV if env else "--log-level"
        raise ServeError(
            f"{source} is {env or default!r}, not a log level; use one of {', '.join(_LEVELS)}"
        )
    return _LEVELS[text]


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON, with the instance's names and the current span's ids."""

    def __init__(self, app: str, service: str, instance: str) -> None:
        super().__init__()
        self._names = (app, service, instance)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        app, service, instance = self._names
        out: dict[str, Any] = {
            "time": self._time(record),
            "level": level_name(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
            "app": app,
            "service": service,
            "instance": instance,
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in out and _is_scalar(value):
                out[key] = value
        if record.exc_info and not record.exc_text:  # formatted once, for every handler
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per record
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN and infinities are not JSON
    return isinstance(value, str | int | bool)


def install_logging(
    app: str,
    service: str,
    instance: str,
    *,
    default_level: str = "info",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Make the root logger write JSON lines to ``stream`` (stderr); returns the handler.

    Replaces the root logger's handlers, and routes uvicorn's loggers to it
    (uvicorn must then be given ``log_config=None``). ServeError for a bad level.
    """
    level = resolve_level(default_level)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter(app, service, instance))
    handler.setLevel(level)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
