"""A clock that moves only when told, for testing TTLs, backoff and balancing."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
