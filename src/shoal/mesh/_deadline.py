"""Deadlines that travel: the time left for a request, carried from hop to hop.

A deadline is an absolute instant on this process's monotonic clock, held in a
``contextvar``. The inbound middleware sets it from the ``shoal-timeout``
header (milliseconds left, relative, so clocks of different machines never
need to agree); every mesh call made while handling that request takes the
smaller of it and its own timeout, and sends what is left onward. Service code
forwards nothing by hand. ``shoal.deadline(seconds)`` sets one explicitly.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Iterator

__all__ = [
    "TIMEOUT_HEADER",
    "current_deadline",
    "deadline",
    "format_timeout",
    "parse_timeout",
    "remaining",
    "reset_deadline",
    "set_deadline",
]

TIMEOUT_HEADER = "shoal-timeout"
"""Milliseconds the receiver has left to answer (an integer, 0 when already late)."""

_MAX_MS = 10**9
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "shoal_deadline", default=None
)

now = time.perf_counter
"""The clock of deadlines (perf_counter: uvloop's loop.time() has millisecond steps)."""


def current_deadline() -> float | None:
    """The instant (on ``perf_counter``) by which the current request must be answered."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the current deadline (negative when past), or None."""
    at = _deadline.get()
    return None if at is None else at - now()


def set_deadline(at: float | None) -> contextvars.Token[float | None]:
    """Make ``at`` the current deadline; returns the token for ``reset_deadline``."""
    return _deadline.set(at)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Mesh calls inside the block must finish within ``seconds`` (or sooner, when an
    outer deadline is nearer). Yields the absolute deadline."""
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"a deadline needs a positive, finite number of seconds, got {seconds}")
    at = now() + seconds
    outer = _deadline.get()
    if outer is not None:
        at = min(at, outer)
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def format_timeout(seconds: float) -> str:
    """The header value for ``seconds`` left (rounded down to whole milliseconds)."""
    return str(max(0, min(int(seconds * 1000), _MAX_MS)))


def parse_timeout(value: str | bytes | None) -> float | None:
    """Seconds from a header value; None when missing or not a whole number of ms."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    return int(text) / 1000
