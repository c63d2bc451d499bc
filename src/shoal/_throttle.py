"""At most one log line per key per interval, counting what was held back.

Refused handshakes and denied requests can come in floods; the log must say
what happens without becoming the flood.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """``admit(key)``: the lines held back since the last one if a line may be written now,
    None if not (it is then counted)."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 1024:  # one entry per reason: only a flood of names gets here
            self._last.clear()
        self._last[key] = now
        return self._held.pop(key, 0)
