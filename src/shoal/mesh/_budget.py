"""Retry budget: retries may add at most a fixed share of the traffic (Finagle, Linkerd).

Retrying a request that failed because its destination is overloaded adds load
exactly when there is none to spare; a per-request retry limit alone turns a
struggling service into one flooded with up to three times its traffic. A budget
caps retries for the whole destination instead: within the last ``window``
seconds a caller may send at most

    ratio * requests + min_per_second * window

retries, where ``requests`` counts original (first-attempt) requests only. With
the defaults a destination that fails every request sees at most 20% more
requests plus 10 per second, whatever the per-request retry limit. The
``min_per_second`` reserve keeps retries possible for callers with little
traffic, for whom 20% would round down to nothing.

Counts live in a ring of ``_SLOTS`` time slots of ``window / _SLOTS`` seconds
each (tower's ``TpsBudget`` works the same way), so memory is constant and old
slots expire as time moves on. The window is therefore quantized: it is the
current slot plus the ``_SLOTS - 1`` before it, between 90% and 100% of
``window`` long, and the bound holds exactly over every such window of whole
slots. No I/O here.
"""

from __future__ import annotations

import math
import time

from shoal.types import Clock

__all__ = ["RetryBudget"]

_SLOTS = 10
_EPSILON = 1e-9  # so that 0.2 * 1000 retries are allowed even if the float is 199.99...


class RetryBudget:
    """How many retries a caller may still send to one destination service."""

    __slots__ = ("_clock", "_ratio", "_requests", "_reserve", "_retries", "_serials", "_slot")

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError(
                f"ratio and min_per_second must not be negative, "
                f"got ratio={ratio} min_per_second={min_per_second}"
            )
        if window <= 0:
            raise ValueError(f"window must be more than 0 seconds, got {window}")
        self._clock = clock
        self._ratio = ratio
        self._reserve = min_per_second * window
        self._slot = window / _SLOTS
        stale = self._serial() - _SLOTS
        self._serials = [stale] * _SLOTS  # which slot number each ring cell holds
        self._requests = [0] * _SLOTS
        self._retries = [0] * _SLOTS

    @property
    def requests(self) -> int:
        """Original requests counted in the current window."""
        return self._sum(self._requests, self._serial())

    @property
    def retries(self) -> int:
        """Retries counted in the current window."""
        return self._sum(self._retries, self._serial())

    def record_request(self) -> None:
        """One original (first-attempt) request was sent."""
        self._requests[self._cell(self._serial())] += 1

    def try_retry(self) -> bool:
        """Count one retry and return True if the budget allows it now; else count nothing."""
        serial = self._serial()
        cell = self._cell(serial)
        allowed = self._ratio * self._sum(self._requests, serial) + self._reserve
        if self._sum(self._retries, serial) + 1 > allowed + _EPSILON:
            return False
        self._retries[cell] += 1
        return True

    def _serial(self) -> int:
        """The number of the slot that holds now."""
        return math.floor(self._clock() / self._slot)

    def _cell(self, serial: int) -> int:
        """The ring cell for slot ``serial``, emptied first if it holds an expired slot."""
        cell = serial % _SLOTS
        if self._serials[cell] != serial:
            self._serials[cell] = serial
            self._requests[cell] = 0
            self._retries[cell] = 0
        return cell

    def _sum(self, counts: list[int], serial: int) -> int:
        """The counts of the window that ends with slot ``serial``."""
        oldest = serial - _SLOTS
        return sum(n for n, s in zip(counts, self._serials, strict=True) if s > oldest)
