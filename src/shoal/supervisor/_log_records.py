"""One line of an instance's output as a :class:`LogRecord`, and back as readable text. No I/O.

The rules, for any program in any language:

- A JSON object with a message (``message`` or ``msg``) and a level (``level``,
  ``severity`` or ``levelname``) is a structured line: its level word is mapped
  (``warn`` -> warning, ``fatal`` -> critical, ...; an unknown word is info), its
  time (``time``, ``timestamp``, ``ts``, ``@timestamp``: ISO-8601 or unix seconds,
  milliseconds or nanoseconds) is kept, else the time it arrived; the trace and
  span ids are read from ``trace_id``/``traceId``/``trace.id`` and
  ``span_id``/``spanId``/``span.id``; every other key with a scalar value
  becomes a field (``app``, ``service`` and ``instance`` excepted: the
  supervisor knows which instance wrote the line).
- Any other line is plain text: on stdout it is info; on stderr, or on the
  combined stream the supervisor reads (it merges stderr into stdout to keep
  their order), a leading level word (``ERROR``, ``[warn]``, ``INFO:``, any
  case) sets the level, else info.

A message longer than :data:`MAX_MESSAGE` characters is cut, and says so.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Literal

from shoal.telemetry import LogLevel, LogRecord

__all__ = ["MAX_MESSAGE", "Stream", "parse_line", "plain", "render", "structured"]

Stream = Literal["stdout", "stderr", "combined"]
MAX_MESSAGE = 16_384
_MAX_FIELD = 4_096

_WORDS: dict[str, LogLevel] = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    "warn": "warning",
    "warning": "warning",
    "err": "error",
    "error": "error",
    "crit": "critical",
    "critical": "critical",
    "fatal": "critical",
    "panic": "critical",
    "alert": "critical",
    "emerg": "critical",
    "emergency": "critical",
}
_PLAIN_LEVEL = re.compile(
    r"\s*[\[(<]?(critical|fatal|error|warning|warn|info|debug)\b[\])>]?", re.IGNORECASE
)
_MESSAGE_KEYS = ("message", "msg")
_LEVEL_KEYS = ("level", "severity", "levelname")
_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp")
_TRACE_KEYS = ("trace_id", "traceId", "trace.id")
_SPAN_KEYS = ("span_id", "spanId", "span.id")
_NOT_FIELDS = frozenset(
    {*_MESSAGE_KEYS, *_LEVEL_KEYS, *_TIME_KEYS, *_TRACE_KEYS, *_SPAN_KEYS, "trace", "span"}
    | {"app", "service", "instance"}
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST_NS = 2**62  # about the year 2116: a larger "time" is not one, and would not fit SQLite
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def parse_line(
    service: str, instance: str, stream: Stream, line: str, now_ns: int
) -> LogRecord | None:
    """The record for one line (without its line break); None for a blank line."""
    record = structured(service, instance, line, now_ns)
    return record if record is not None else plain(service, instance, stream, line, now_ns)


def structured(service: str, instance: str, line: str, now_ns: int) -> LogRecord | None:
    """The record of a structured (JSON) line; None if the line is not one."""
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # deep nesting exhausts the stack
        return None
    return _from_json(service, instance, data, now_ns) if isinstance(data, dict) else None


def plain(service: str, instance: str, stream: Stream, line: str, now_ns: int) -> LogRecord | None:
    """The record of a line of plain text; None for a blank line."""
    if not line.strip():
        return None
    level: LogLevel = "info"
    if stream != "stdout" and (match := _PLAIN_LEVEL.match(line)):
        level = _WORDS[match[1].lower()]
    return LogRecord(
        time_ns=now_ns, service=service, instance=instance, level=level, message=_cut(line)
    )


def render(record: LogRecord) -> str:
    """A structured line as people read it: ``INFO:     logger: message  trace=4bf92f35``."""
    logger = record.fields.get("logger")
    text = f"{record.level.upper() + ':':<10}{f'{logger}: ' if logger else ''}{record.message}"
    if record.trace_id is not None:
        text += f"  trace={record.trace_id[:8]}"
    exc = record.fields.get("exc")
    if isinstance(exc, str) and exc:
        text += "\n" + exc
    return text


def _from_json(service: str, instance: str, data: dict[str, Any], now_ns: int) -> LogRecord | None:
    message = _first(data, _MESSAGE_KEYS)
    level_word = _first(data, _LEVEL_KEYS)
    if message is None or level_word is None:
        return None
    fields: dict[str, str | int | float | bool] = {}
    level = _WORDS.get(str(level_word).lower())
    if level is None:
        level = "info"
        fields["level"] = _cut(str(level_word), _MAX_FIELD)
    trace_id = _hex_id(_first(data, _TRACE_KEYS) or _nested(data, "trace"), _HEX32)
    span_id = _hex_id(_first(data, _SPAN_KEYS) or _nested(data, "span"), _HEX16)
    for key, value in data.items():
        if key in _NOT_FIELDS or value is None:
            continue
        if isinstance(value, str):
            fields[key] = _cut(value, MAX_MESSAGE if key in ("exc", "stack") else _MAX_FIELD)
        elif isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
            fields[key] = value
    return LogRecord(
        time_ns=_time_ns(_first(data, _TIME_KEYS), now_ns),
        service=service,
        instance=instance,
        level=level,
        message=_cut(message if isinstance(message, str) else json.dumps(message)),
        trace_id=trace_id,
        span_id=span_id,
        fields=fields,
    )


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


def _nested(data: dict[str, Any], key: str) -> Any:
    """``{"trace": {"id": ...}}``, the nested spelling of ECS's ``trace.id``."""
    value = data.get(key)
    return value.get("id") if isinstance(value, dict) else None


def _hex_id(value: object, pattern: re.Pattern[str]) -> str | None:
    """A W3C id in lowercase hex; None if absent, malformed or all zeros (invalid in W3C)."""
    if not isinstance(value, str):
        return None
    text = value.lower()
    return text if pattern.fullmatch(text) and text.strip("0") else None


def _time_ns(value: Any, now_ns: int) -> int:
    if isinstance(value, bool):
        return now_ns
    if isinstance(value, int | float) and 0 < value < _LATEST_NS:
        # seconds, milliseconds, microseconds or nanoseconds since 1970, by magnitude
        for bound, scale in ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3)):
            if value < bound:  # an int stays exact; a float is as exact as it is
                return value * scale if isinstance(value, int) else round(value * scale)
        return int(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return now_ns
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        micros = (when - _EPOCH) // dt.timedelta(microseconds=1)
        if micros >= 0:
            return micros * 1000
    return now_ns


def _cut(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"
