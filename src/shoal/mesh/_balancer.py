"""Endpoint choice: power of two choices over peak-EWMA latency times outstanding requests.

Each endpoint's cost is ``ewma * (outstanding + 1)``. The EWMA is "peak"
sensitive (Finagle's PeakEwma, which Linkerd uses too): a latency above the
average replaces it at once, lower ones blend in with weight
``1 - exp(-dt / decay)``, and the cost decays towards zero while an endpoint is
idle, so a slow endpoint is probed again now and then rather than starved
forever. A new endpoint costs nothing until its first answer, one request at a
time, so even a sequential caller measures it at once; then it starts at its
peers' average. Two distinct endpoints are sampled at random and the cheaper
one wins. Time spent connecting is not latency (the caller leaves it out).
Endpoints marked down are never chosen until their time is up. No I/O here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Collection, Sequence

from shoal.registry._records import InstanceRecord
from shoal.types import Clock

__all__ = ["Balancer"]


class _Stats:
    __slots__ = ("down_until", "ewma", "measured", "outstanding", "stamp")

    def __init__(self, rtt: float, now: float) -> None:
        self.ewma = rtt
        self.stamp = now
        self.outstanding = 0
        self.down_until = 0.0
        self.measured = False


class Balancer:
    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        decay: float = 10.0,
        default_rtt: float = 0.001,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._decay = decay
        self._default_rtt = default_rtt
        self._stats: dict[str, _Stats] = {}

    def _get(self, instance: str, now: float) -> _Stats:
        stats = self._stats.get(instance)
        if stats is None:
            stats = self._stats[instance] = _Stats(self._default_rtt, now)
        return stats

    def cost(self, instance: str, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        stats = self._get(instance, now)
        if not stats.measured and not stats.outstanding:
            return 0.0  # never measured: probe it now (one request at a time until it answers)
        idle = max(now - stats.stamp, 0.0)
        ewma = stats.ewma * math.exp(-idle / self._decay) if idle > 0 else stats.ewma
        return ewma * (stats.outstanding + 1)

    def pick(
        self, candidates: Sequence[InstanceRecord], exclude: Collection[str] = ()
    ) -> InstanceRecord | None:
        """Choose an endpoint, or None when every candidate is excluded or down."""
        now = self._clock()
        stats = self._stats
        if any(rec.instance not in stats for rec in candidates):
            self._welcome(candidates, now)
        usable = [
            rec
            for rec in candidates
            if rec.instance not in exclude
            and (rec.instance not in stats or stats[rec.instance].down_until <= now)
        ]
        n = len(usable)
        if n <= 1:
            return usable[0] if usable else None
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = usable[i], usable[j]
        return a if self.cost(a.instance, now) <= self.cost(b.instance, now) else b

    def _welcome(self, candidates: Sequence[InstanceRecord], now: float) -> None:
        """A new instance starts at its peers' average latency, so it gets its share of
        traffic at once and is measured, instead of waiting behind faster-looking peers."""
        known = [self._stats[r.instance].ewma for r in candidates if r.instance in self._stats]
        rtt = sum(known) / len(known) if known else self._default_rtt
        for rec in candidates:
            if rec.instance not in self._stats:
                self._stats[rec.instance] = _Stats(rtt, now)

    def start(self, instance: str) -> float:
        """A request to ``instance`` begins; returns the start time for ``finish``."""
        now = self._clock()
        self._get(instance, now).outstanding += 1
        return now

    def finish(self, instance: str, started: float) -> None:
        """The request that began at ``started`` got its answer: record its latency."""
        now = self._clock()
        stats = self._get(instance, now)
        stats.outstanding = max(stats.outstanding - 1, 0)
        rtt = max(now - started, 0.0)
        idle = max(now - stats.stamp, 0.0)
        stats.stamp = now
        stats.measured = True
        if rtt > stats.ewma:
            stats.ewma = rtt
        else:
            w = math.exp(-idle / self._decay)
            stats.ewma = stats.ewma * w + rtt * (1.0 - w)

    def abandon(self, instance: str) -> None:
        """The request failed without a latency worth recording."""
        stats = self._stats.get(instance)
        if stats is not None:
            stats.outstanding = max(stats.outstanding - 1, 0)

    def mark_down(self, instance: str, seconds: float) -> None:
        """Never choose ``instance`` for ``seconds`` (it refused a connection)."""
        now = self._clock()
        self._get(instance, now).down_until = now + seconds

    def is_down(self, instance: str) -> bool:
        stats = self._stats.get(instance)
        return stats is not None and stats.down_until > self._clock()

    def forget(self, keep: Collection[str]) -> None:
        """Drop the state of instances not in ``keep`` (they left the registry)."""
        for instance in [i for i in self._stats if i not in keep]:
            del self._stats[instance]
