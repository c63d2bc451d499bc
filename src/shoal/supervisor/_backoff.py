"""Restart backoff: 1 s doubling to 30 s, reset after 60 s of health. No I/O here."""

from __future__ import annotations

import dataclasses

__all__ = ["Backoff"]


@dataclasses.dataclass
class Backoff:
    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    crash_loop_after: int = 3
    """Consecutive quick crashes after which a service shows as ``crash-loop``."""

    _next: float = dataclasses.field(default=0.0, init=False)
    consecutive: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        self._next = self.initial

    def after_exit(self, ran_for: float) -> float:
        """The process exited after ``ran_for`` seconds: how long to wait before restarting."""
        if ran_for >= self.reset_after:
            self._next = self.initial
            self.consecutive = 0
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        self.consecutive += 1
        return delay

    @property
    def crash_looping(self) -> bool:
        return self.consecutive >= self.crash_loop_after
