"""Golden metrics kept over time: one point per service every ``every`` seconds, in the
telemetry store, so charts outlast ``shoal down`` (the live window is 15 minutes)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from shoal.exceptions import TelemetryError
from shoal.supervisor._golden import golden
from shoal.supervisor._metrics import MetricsAggregator
from shoal.telemetry import AsyncTelemetryStore, MetricPoint

__all__ = ["SERIES", "MetricHistory", "series"]

log = logging.getLogger("shoal.telemetry")

SERIES = ("rps", "success", "p50_ms", "p99_ms", "in_flight")
"""The golden metrics kept per service, stored as ``shoal.<name>``."""


class MetricHistory:
    """Writes each service's golden metrics of the last ``every`` seconds to the store."""

    def __init__(
        self,
        aggregator: MetricsAggregator,
        store: AsyncTelemetryStore,
        instances: Callable[[], dict[str, int]],
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._aggregator = aggregator
        self._store = store
        self._instances = instances
        self._every = every
        self._clock = clock

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every - self._clock() % self._every)
            try:
                await self.record()
            except TelemetryError as exc:
                log.warning("could not keep metrics: %s", exc)

    async def record(self) -> int:
        """Store the last whole period's golden metrics, stamped with its end."""
        end = self._clock() // self._every * self._every
        stat = golden(self._aggregator.window(self._every, end=end), self._instances())
        time_ns = int(end * 1e9)
        points = [
            MetricPoint(time_ns=time_ns, name=f"shoal.{name}", service=row["service"], value=value)
            for row in stat["services"]
            for name in SERIES
            if (value := row[name]) is not None
        ]
        return await self._store.add_metrics(points)


async def series(store: AsyncTelemetryStore, service: str, since_ns: int) -> list[dict[str, Any]]:
    """The stored points of ``service`` since ``since_ns``, one row per time, oldest first."""
    rows: dict[int, dict[str, Any]] = {}
    for name in SERIES:
        for point in await store.metrics(f"shoal.{name}", service=service, since_ns=since_ns):
            row = rows.setdefault(point.time_ns, {"time": point.time_ns / 1e9})
            row[name] = point.value
    return [{**dict.fromkeys(SERIES), **rows[t]} for t in sorted(rows)]
