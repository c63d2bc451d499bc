"""Retry backoff: AWS "full jitter".

The n-th retry waits a uniformly random time in ``[0, min(cap, base * 2 ** (n - 1))]``.
The exponential ceiling spreads retries out as failures persist, and drawing the whole
wait at random (rather than adding a little jitter to a fixed wait) keeps clients that
failed together from retrying together. Of the schemes compared in the AWS Architecture
Blog's "Exponential Backoff And Jitter", it does the least work for the same completion
time. The random source is injected so tests are repeatable. No I/O here.
"""

from __future__ import annotations

import random

__all__ = ["full_jitter"]

# 2.0 ** 1023 is the largest power of two a float holds; past it the ceiling is the cap anyway.
_MAX_EXPONENT = 1000


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more (the first retry is 1), got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must not be negative, got base={base} cap={cap}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return rng.uniform(0.0, ceiling)
