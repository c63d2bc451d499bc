"""Outlier detection: passive health checks on one destination's instances (Envoy style).

Every request's outcome is recorded against the instance that answered it; the
caller decides what a failure is (a 5xx or a connection error). An instance with
``consecutive_failures`` failures in a row is *ejected*: it is left out of
:meth:`OutlierDetector.eligible` for ``base_ejection * n`` seconds, where ``n``
counts its ejections, capped at ``max_ejection``. The count decays: once an
instance has been back in rotation for ``max_ejection`` seconds, its next
ejection counts as its first again.

When its time is up an instance is *on probation*: it is eligible again, but
only for one request at a time. The caller reports the request it sends with
:meth:`~OutlierDetector.started` and its outcome with ``record`` (or
``abandoned`` if it never got one). A success restores the instance; a failure
ejects it again at once, for longer. Any outcome recorded on probation counts as
the verdict; one recorded while still ejected (a request sent before the
ejection) is ignored. A probe whose outcome has not come back after
``base_ejection`` seconds is treated as abandoned.

Ejections are limited so that a bad deploy cannot empty a service: at most
``floor(n * max_ejected_fraction)`` of the ``n`` known instances are out (ejected
or on probation) at once, and at least one when ``n >= 2`` (Envoy ejects at least
one host whatever its ``max_ejection_percent``). A failing instance held back by
the limit stays in rotation; its next failure tries again. The limit yields only
when *every* known instance is failing (ejected, on probation, or at the failure
threshold): then all are ejected, ``eligible`` returns ``[]`` and the caller
treats the destination's circuit as open. A lone instance is thus ejected only
when it is failing, as it is then every instance.

An instance is known from the first time it is passed to ``eligible`` or
``record`` until ``forget`` drops it. No I/O here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence

from shoal.types import Clock

__all__ = ["OutlierDetector"]


class _Health:
    __slots__ = ("back_since", "ejections", "failures", "probe_since", "until")

    def __init__(self) -> None:
        self.failures = 0  # consecutive
        self.ejections = 0
        self.until: float | None = None  # ejected (or on probation once passed) until then
        self.back_since = -math.inf  # when it was last restored
        self.probe_since: float | None = None  # the outstanding probe's start


class OutlierDetector:
    """Which instances of one destination service may be picked now."""

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejected_fraction: float = 0.5,
        clock: Clock = time.monotonic,
        on_eject: Callable[[], None] | None = None,
    ) -> None:
        self._on_eject = on_eject
        if consecutive_failures < 1:
            raise ValueError(f"consecutive_failures must be 1 or more, got {consecutive_failures}")
        if base_ejection <= 0 or max_ejection <= 0:
            raise ValueError(
                f"ejection times must be more than 0 seconds, "
                f"got base_ejection={base_ejection} max_ejection={max_ejection}"
            )
        if not 0 <= max_ejected_fraction <= 1:
            raise ValueError(
                f"max_ejected_fraction must be between 0 and 1, got {max_ejected_fraction}"
            )
        self._threshold = consecutive_failures
        self._base = base_ejection
        self._max = max_ejection
        self._fraction = max_ejected_fraction
        self._clock = clock
        self._health: dict[str, _Health] = {}

    def eligible(self, instances: Sequence[str]) -> list[str]:
        """The instances that may be picked now, in the given order; [] means circuit open."""
        now = self._clock()
        return [i for i in instances if self._available(self._get(i), now)]

    def started(self, instance: str) -> None:
        """A request to ``instance`` was just sent; on probation, it is the one probe."""
        now = self._clock()
        health = self._get(instance)
        if health.until is not None and now >= health.until:
            health.probe_since = now

    def abandoned(self, instance: str) -> None:
        """The request to ``instance`` ended without an outcome (cancelled, say)."""
        health = self._health.get(instance)
        if health is not None:
            health.probe_since = None

    def record(self, instance: str, ok: bool) -> None:
        """The outcome of one request to ``instance``."""
        now = self._clock()
        health = self._get(instance)
        health.probe_since = None
        if health.until is not None:
            if now < health.until:
                return  # sent before the ejection; the ejection stands
            if ok:  # the probe passed
                health.until, health.failures, health.back_since = None, 0, now
            else:
                self._eject(health, now)
            return
        if ok:
            health.failures = 0
            return
        health.failures += 1
        if health.failures >= self._threshold:
            self._over_threshold(health, now)

    def ejected(self) -> dict[str, float]:
        """Instance -> seconds of ejection left (0.0 once on probation)."""
        now = self._clock()
        return {
            instance: max(health.until - now, 0.0)
            for instance, health in self._health.items()
            if health.until is not None
        }

    def forget(self, keep: Collection[str]) -> None:
        """Drop the state of every instance not in ``keep`` (they left the service)."""
        for instance in [i for i in self._health if i not in keep]:
            del self._health[instance]

    def _get(self, instance: str) -> _Health:
        health = self._health.get(instance)
        if health is None:
            health = self._health[instance] = _Health()
        return health

    def _available(self, health: _Health, now: float) -> bool:
        """In rotation, or on probation with no probe outstanding."""
        if health.until is None:
            return True
        if now < health.until:
            return False
        return health.probe_since is None or now - health.probe_since >= self._base

    def _over_threshold(self, health: _Health, now: float) -> None:
        """Eject a failing instance if the limit allows, or all of them if all are failing."""
        out = sum(1 for h in self._health.values() if h.until is not None)
        if out + 1 <= self._max_out():
            self._eject(health, now)
            return
        if all(h.until is not None or h.failures >= self._threshold for h in self._health.values()):
            for other in self._health.values():
                if other.until is None:
                    self._eject(other, now)

    def _max_out(self) -> int:
        known = len(self._health)
        if known < 2:
            return 0
        return max(1, math.floor(known * self._fraction + 1e-9))

    def _eject(self, health: _Health, now: float) -> None:
        if health.until is None and now - health.back_since >= self._max:
            health.ejections = 0  # healthy long enough: the count starts over
        health.ejections += 1
        health.until = now + min(self._base * health.ejections, self._max)
        health.probe_since = None
        if self._on_eject is not None:
            self._on_eject()
