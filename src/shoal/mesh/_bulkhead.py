"""Bulkhead: a cap on one caller's requests in flight to one destination service.

A slow destination holds every request sent to it; without a cap a caller keeps
sending until its own memory, sockets or event loop give out, and the slowness
spreads upstream. The bulkhead refuses the request past the cap at once (the
caller answers ``overloaded``) instead of queueing it, so one sick dependency
costs only its own share. It is a plain counter: asyncio runs one task at a
time, so no lock is needed. No I/O here.
"""

from __future__ import annotations

__all__ = ["Bulkhead"]


class Bulkhead:
    """At most ``limit`` requests in flight; the next one is refused, not queued."""

    __slots__ = ("_in_flight", "_limit")

    def __init__(self, limit: int = 1024) -> None:
        self._limit = _checked(limit)
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Change the cap; requests already in flight over a lower cap finish normally."""
        self._limit = _checked(limit)

    def try_acquire(self) -> bool:
        """Take a slot and return True, or return False at once if all are taken."""
        if self._in_flight >= self._limit:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back the slot taken by a successful :meth:`try_acquire`."""
        if self._in_flight == 0:
            raise RuntimeError("Bulkhead.release() without a matching try_acquire()")
        self._in_flight -= 1


def _checked(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"a bulkhead limit must be 1 or more, got {limit}")
    return limit
