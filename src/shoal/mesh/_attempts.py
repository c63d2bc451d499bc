"""What one mesh call tried: an attempt per instance, for ``shoal call --explain``.

The transport appends an :class:`Attempt` for every try (and for decisions made
before any try, such as an injected fault) and hands the list to the caller on
the response (``response.extensions["shoal.attempts"]``) or on the error
(``exc.attempts``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["ATTEMPTS", "Attempt"]

ATTEMPTS = "shoal.attempts"
"""The response extension that holds the list of attempts."""


@dataclasses.dataclass(slots=True)
class Attempt:
    """One try of a call: where it went, how long it took, what came of it."""

    instance: str
    """The instance tried, or ``""`` for a decision taken before sending."""
    address: str = ""
    version: str = ""
    latency: float = 0.0
    """Seconds from sending to the answer's head (or the failure)."""
    outcome: str = ""
    """``"200"``, ``"503 overloaded"``, ``"connect refused"``, ``"timed out"``..."""
    decision: str = ""
    """What the mesh did next: ``"returned"``, ``"retry after 12 ms: 503"``, ``"gave up: ..."``."""
    sent: float = 0.0
    """When it was sent (``time.perf_counter``)."""

    def describe(self) -> str:
        where = f"{self.instance} ({self.address}, {self.version})" if self.instance else "mesh"
        took = f" in {self.latency * 1000:.1f} ms" if self.instance else ""
        return f"{where}: {self.outcome}{took} -> {self.decision}"
