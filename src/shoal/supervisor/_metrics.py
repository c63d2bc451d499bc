"""The supervisor's side of metrics: the whole app's scrape, and golden metrics over windows.

Instances publish cumulative snapshots (``runtime._metrics_ship``). The aggregator
keeps each live instance's latest snapshot, for :meth:`MetricsAggregator.exposition`
(one Prometheus scrape for the app, every sample labelled ``shoal_instance``), and
turns each snapshot into increments since the previous one, summed into time slots
of ``slot`` seconds. Rates, success and percentiles over any window up to
``keep`` seconds are then sums over slots, exact whatever the number of
instances, restarts included: a new ``boot`` means the counters started again.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from shoal.backbone._connection import Backbone
from shoal.runtime._metrics_ship import metrics_subject

__all__ = ["MetricsAggregator", "Window", "quantile"]

log = logging.getLogger("shoal.telemetry")

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]
"""A series: sample name and its sorted labels."""

SERVER = "http_server_request_duration_seconds"
CLIENT = "http_client_request_duration_seconds"
ACTIVE = "http_server_active_requests"
RETRIES = "shoal_client_retries_total"
EJECTIONS = "shoal_outlier_ejections_total"
STALE_AFTER = 30.0
"""Seconds after its last snapshot that an instance leaves the scrape."""


@dataclass
class _Instance:
    service: str
    boot: str
    seen: float
    families: list[dict[str, Any]]
    totals: dict[Key, float] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)


class Window:
    """Increments of every series over a window, and the gauges now."""

    def __init__(self, seconds: float, sums: dict[Key, float], gauges: dict[Key, float]) -> None:
        self.seconds = seconds
        self.sums = sums
        self.gauges = gauges

    def series(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        for (sample, labels), value in self.sums.items():
            if sample == name:
                yield dict(labels), value


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile``: ``buckets`` maps each upper bound (``le``) to its cumulative
    count; the answer interpolates linearly inside the bucket holding rank ``q``."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: the best that can be said
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class MetricsAggregator:
    """Receives the app's metric snapshots; answers scrapes and windowed questions."""

    def __init__(
        self,
        backbone: Backbone | None,
        app: str,
        *,
        slot: float = 5.0,
        keep: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backbone = backbone
        self._subject = metrics_subject(app)
        self._slot = slot
        self._keep = keep
        self._clock = clock
        self._instances: dict[str, _Instance] = {}
        self._slots: collections.deque[tuple[float, dict[Key, float]]] = collections.deque()
        self._sub: Any = None
        self.rejected = 0
        self.started = clock()

    async def start(self) -> None:
        assert self._backbone is not None
        self._sub = await self._backbone.nc.subscribe(self._subject, cb=self._on_push)

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_push(self, msg: Any) -> None:
        try:
            self.receive(json.loads(msg.data))
        except (ValueError, KeyError, TypeError) as exc:
            self.rejected += 1
            log.debug("dropped a malformed metrics snapshot: %r", exc)

    # -- intake ----------------------------------------------------------------------

    def receive(self, snapshot: dict[str, Any]) -> None:
        """Take one instance's cumulative snapshot; raises ValueError/KeyError if malformed."""
        name = str(snapshot["instance"])
        boot = str(snapshot["boot"])
        families = list(snapshot["families"])
        now = self._clock()
        inst = self._instances.get(name)
        if inst is None or inst.boot != boot:  # new, or restarted: counters began at zero
            inst = self._instances[name] = _Instance(str(snapshot["service"]), boot, now, [])
        inst.seen = now
        inst.families = families
        increments = self._slot_at(now)
        for family in families:
            kind = family["type"]
            for sample, labels, value in family["samples"]:
                key: Key = (str(sample), tuple(sorted((str(k), str(v)) for k, v in labels.items())))
                value = float(value)
                if kind == "gauge":
                    inst.gauges[key] = value
                    continue
                if kind not in ("counter", "histogram"):
                    continue
                delta = value - inst.totals.get(key, 0.0)
                inst.totals[key] = value
                if delta < 0:  # a reset we were not told of: count from zero
                    delta = value
                if delta:
                    increments[key] = increments.get(key, 0.0) + delta

    def _slot_at(self, now: float) -> dict[Key, float]:
        start = now - now % self._slot
        if not self._slots or self._slots[-1][0] < start:
            self._slots.append((start, {}))
        while self._slots and self._slots[0][0] < now - self._keep - self._slot:
            self._slots.popleft()
        return self._slots[-1][1]

    # -- questions ------------------------------------------------------------------

    def live(self) -> dict[str, _Instance]:
        cutoff = self._clock() - STALE_AFTER
        for name in [n for n, i in self._instances.items() if i.seen < cutoff]:
            del self._instances[name]
        return self._instances

    def window(self, seconds: float, *, end: float | None = None) -> Window:
        """Increments over the last ``seconds``, gauges of the live instances.

        Without ``end``: every slot that overlaps the last ``seconds``, the one filling
        now included. With ``end``: the slots that start in ``[end - seconds, end)``, so
        back-to-back windows never count a slot twice.
        """
        now = self._clock()
        since = now - seconds if end is None else end - seconds
        sums: dict[Key, float] = {}
        for start, increments in self._slots:
            if end is None and start + self._slot <= since:
                continue
            if end is not None and not since <= start < end:
                continue
            for key, value in increments.items():
                sums[key] = sums.get(key, 0.0) + value
        gauges: dict[Key, float] = {}
        for inst in self.live().values():
            for key, value in inst.gauges.items():
                gauges[key] = gauges.get(key, 0.0) + value
        covered = min(seconds, max(now - self.started, self._slot))
        return Window(covered, sums, gauges)

    def exposition(self, extra: Iterable[Metric] = ()) -> str:
        """Every live instance's latest snapshot, merged, in Prometheus text format."""
        merged: dict[str, Metric] = {}
        for name, inst in sorted(self.live().items()):
            for family in inst.families:
                metric = merged.get(family["name"])
                if metric is None:
                    metric = merged[family["name"]] = Metric(
                        family["name"], family["help"], family["type"]
                    )
                for sample, labels, value in family["samples"]:
                    metric.add_sample(sample, {**labels, "shoal_instance": name}, float(value))
        metrics = [*merged.values(), *extra]

        class _Collector:
            def collect(self) -> Iterable[Metric]:
                return metrics

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        return generate_latest(registry).decode()
