"""Rate limits per caller: token buckets keyed by the calling service's name.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` tokens a
second; each request takes one, and a request finding none is refused with the
time until the next token (for a ``Retry-After`` header). A full bucket lets a
burst through at once; a steady caller is held to ``rate`` per second.

:class:`CallerRateLimits` gives every calling service its own bucket, at the
rate named for it or, for callers not named, the ``"*"`` rate; a caller with no
rate at all is not limited. Each unnamed caller gets its own ``"*"`` bucket, so
one noisy caller cannot use up the others' share. A full bucket behaves exactly
like a fresh one, so full buckets are dropped whenever many have piled up; the
memory held stays bounded by the callers active recently. No I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from shoal.types import Clock

__all__ = ["CallerRateLimits", "TokenBucket"]

_PRUNE_AT = 1024  # buckets kept before full ones are dropped


class TokenBucket:
    """``rate`` requests a second on average, up to ``burst`` at once."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be more than 0 per second, got {rate}")
        burst = max(1.0, rate) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be at least 1 (one request), got {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = self._burst
        self._stamp = clock()

    @property
    def full(self) -> bool:
        """True when the bucket holds ``burst`` tokens, as a new one would."""
        self._refill()
        return self._tokens >= self._burst

    def try_take(self) -> bool:
        """Take one token and return True, or return False if there is none."""
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def retry_after(self) -> float:
        """Seconds until a token is there (0.0 if one is there now)."""
        self._refill()
        return max(1.0 - self._tokens, 0.0) / self._rate

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(now - self._stamp, 0.0)
        self._stamp = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


class CallerRateLimits:
    """One token bucket per calling service; ``"*"`` is the rate for callers not named."""

    __slots__ = ("_buckets", "_clock", "_limits", "_prune_at")

    def __init__(self, limits: Mapping[str, float], *, clock: Clock = time.monotonic) -> None:
        for caller, rate in limits.items():
            if rate <= 0:
                raise ValueError(f"rate for caller {caller!r} must be more than 0, got {rate}")
        self._limits = dict(limits)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._prune_at = _PRUNE_AT

    def try_take(self, caller: str) -> bool:
        """Count one request from ``caller``; False means it is over its rate."""
        bucket = self._bucket(caller)
        return True if bucket is None else bucket.try_take()

    def retry_after(self, caller: str) -> float:
        """Seconds until ``caller`` may send again (0.0 if now, or if it is not limited)."""
        bucket = self._bucket(caller)
        return 0.0 if bucket is None else bucket.retry_after()

    def _bucket(self, caller: str) -> TokenBucket | None:
        bucket = self._buckets.get(caller)
        if bucket is not None:
            return bucket
        rate = self._limits.get(caller, self._limits.get("*"))
        if rate is None:
            return None
        if len(self._buckets) >= self._prune_at:
            self._prune()
        bucket = self._buckets[caller] = TokenBucket(rate, clock=self._clock)
        return bucket

    def _prune(self) -> None:
        for caller in [c for c, b in self._buckets.items() if b.full]:
            del self._buckets[caller]
        # Many callers busy at once: look again only when they have doubled.
        self._prune_at = max(_PRUNE_AT, 2 * len(self._buckets))
