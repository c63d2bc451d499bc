"""Adaptive concurrency limit for inbound requests: shed load before latency explodes.

A service has some concurrency past which more requests only queue: each one
waits longer and none finishes sooner. The limiter admits at most ``limit``
requests at once and sheds the rest at once (``503`` with ``Retry-After``),
and it learns ``limit`` from latency, as Netflix's concurrency-limits library
does. It is their *gradient* algorithm:

    gradient  = clamp(_TOLERANCE * baseline / recent, 0.5, 1.0)
    new_limit = limit * gradient + sqrt(limit)
    limit     = limit + _SMOOTHING * (new_limit - limit), within [min_limit, max_limit]

``recent`` is the mean latency of the last *window* (at least ``_WINDOW_SAMPLES``
requests and ``_WINDOW_RTTS`` round trips; one update per window, since an update
per request reacts to its own echo and oscillates). ``baseline`` is the latency
without queueing. While latency stays within ``_TOLERANCE`` of it the limit grows
by ``sqrt(limit)`` a step; as queueing sets in it shrinks in proportion. A request
that was dropped or timed out cuts the limit by ``_BACKOFF`` at once (AIMD's
multiplicative decrease). A window in which fewer than half the slots were used
says nothing about the limit and leaves it alone.

Why not Gradient2, whose baseline is a long-term average of latency: under
sustained overload that average creeps up to the overloaded latency, so the
limit drifts up without bound, and its ``long/short > 2`` reset turns the drift
into a saw-tooth (simulated at 3x capacity: limit between 4 and 120, p99 at six
times the unloaded latency). Why not a minimum latency (Gradient v1, Vegas): the
minimum of noisy latencies lies far below their mean, so a service with a long
tail but no queueing sheds for nothing. Instead the baseline is a *measured*
mean latency: of a window that used under half the limit (no queueing of our
making), or, after ``_PROBE_EVERY`` seconds of saturation without one, of a
*probe*, as BBR's ProbeRTT: the limit is halved until ``_PROBE_SAMPLES`` requests
admitted under it have finished, then restored. A probe costs a few round trips
at half concurrency every ``_PROBE_EVERY`` seconds of overload; ``_TOLERANCE``
keeps ordinary noise from reading as queueing. At startup under load the first
probe comes at once, and while probes keep finding the baseline far too high
(the limit was far past the knee, where halving it is not enough) the next one
comes after ``_PROBE_AGAIN`` seconds. No I/O here.
"""

from __future__ import annotations

import math
import time

from shoal.types import Clock

__all__ = ["AdaptiveLimiter"]

_TOLERANCE = 1.25  # latency up to 25% over the baseline is not queueing
_SMOOTHING = 0.2  # share of each step's new limit that is taken
_BACKOFF = 0.9  # limit multiplier on a dropped or timed-out request
_WINDOW_SAMPLES = 10
_WINDOW_RTTS = 2.0
_PROBE_EVERY = 10.0  # seconds a baseline is trusted while saturated
_PROBE_AGAIN = 1.0  # ... or, when the last probe found it far too high, this long
_FAR_BELOW = 0.8  # a probe result under this share of the old baseline was far below it
_PROBE_SAMPLES = 100
_PROBE_LONGEST = 1.0  # seconds; after it a probe ends with what it has (>= _WINDOW_SAMPLES)


class AdaptiveLimiter:
    """How many inbound requests this instance takes at once; learnt from their latency."""

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 4,
        max_limit: int = 1000,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= initial_limit <= max_limit:
            raise ValueError(
                "limits must satisfy 1 <= min_limit <= initial_limit <= max_limit, got "
                f"min_limit={min_limit} initial_limit={initial_limit} max_limit={max_limit}"
            )
        self._min, self._max = float(min_limit), float(max_limit)
        self._limit = float(initial_limit)
        self._clock = clock
        self._in_flight = 0
        self._baseline: float | None = None  # mean latency without queueing
        self._baseline_at = -math.inf
        self._trusted_for = _PROBE_EVERY  # seconds the baseline is trusted while saturated
        self._recent: float | None = None  # mean latency of the last window
        # the window being filled: start, requests, latency sum, most in flight
        self._w_start, self._w_n, self._w_sum, self._w_peak = clock(), 0, 0.0, 0
        # the probe, if one runs: start, limit to restore, requests, latency sum
        self._p_start: float | None = None
        self._p_saved, self._p_n, self._p_sum = 0.0, 0, 0.0

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def baseline(self) -> float | None:
        """The latency without queueing the limit is judged against (None until measured)."""
        return self._baseline

    @property
    def probing(self) -> bool:
        """True while the limit is halved to measure the baseline."""
        return self._p_start is not None

    def try_acquire(self) -> float | None:
        """Admit a request and return its start time for :meth:`release`; None means shed."""
        if self._in_flight >= int(self._limit):
            return None
        self._in_flight += 1
        return self._clock()

    def release(self, started: float, *, dropped: bool = False) -> None:
        """The request admitted at ``started`` finished; ``dropped`` if it timed out or failed
        for lack of capacity."""
        if self._in_flight == 0:
            raise RuntimeError("AdaptiveLimiter.release() without a matching try_acquire()")
        in_flight = self._in_flight
        self._in_flight -= 1
        if dropped:
            self._limit = max(self._min, self._limit * _BACKOFF)
            self._p_saved = max(self._min, self._p_saved * _BACKOFF)
            return
        now = self._clock()
        latency = now - started
        if latency <= 0:
            return  # the clock did not move: no information
        if self._p_start is not None and started >= self._p_start:
            self._p_n += 1
            self._p_sum += latency
        self._w_n += 1
        self._w_sum += latency
        self._w_peak = max(self._w_peak, in_flight)
        mean = self._w_sum / self._w_n
        if self._w_n >= _WINDOW_SAMPLES and now - self._w_start >= _WINDOW_RTTS * mean:
            saturated = self._w_peak >= self._limit / 2
            self._w_start, self._w_n, self._w_sum, self._w_peak = now, 0, 0.0, 0
            self._recent = mean
            self._window(now, mean, saturated)

    def retry_after(self) -> int:
        """Whole seconds for a ``Retry-After`` header: a recent latency rounded up, at least 1."""
        latency = self._recent if self._recent is not None else self._baseline
        return max(1, math.ceil(latency or 0.0))

    def _window(self, now: float, mean: float, saturated: bool) -> None:
        if self._p_start is not None:
            self._probe_step(now, self._p_start)
        elif not saturated:
            self._baseline, self._baseline_at, self._trusted_for = mean, now, _PROBE_EVERY
        elif self._baseline is None or now - self._baseline_at >= self._trusted_for:
            self._p_start, self._p_saved, self._p_n, self._p_sum = now, self._limit, 0, 0.0
            self._limit = max(self._min, self._limit / 2)
        else:
            gradient = min(1.0, max(0.5, _TOLERANCE * self._baseline / mean))
            target = self._limit * gradient + math.sqrt(self._limit)
            limit = self._limit + _SMOOTHING * (target - self._limit)
            self._limit = min(self._max, max(self._min, limit))

    def _probe_step(self, now: float, probe_start: float) -> None:
        if self._p_n >= _PROBE_SAMPLES or (
            self._p_n >= _WINDOW_SAMPLES and now - probe_start >= _PROBE_LONGEST
        ):
            old, new = self._baseline, self._p_sum / self._p_n
            far_below = old is None or new < _FAR_BELOW * old
            self._trusted_for = _PROBE_AGAIN if far_below else _PROBE_EVERY
            self._baseline, self._baseline_at = new, now
            self._limit, self._p_start = self._p_saved, None
