"""Shipping an instance's metrics to the supervisor, which serves the whole app's.

Every ``interval`` seconds (and once more on the way out) a serving instance
publishes a snapshot of its registry (``shoal.mesh._metrics.REGISTRY``) on
``shoal.<app>.telemetry.metrics``: cumulative values, as Prometheus keeps them, so
a lost snapshot loses nothing but freshness. ``boot`` tells the supervisor that a
restarted instance's counters started again from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import nats.errors
from prometheus_client import CollectorRegistry

from shoal.backbone._connection import Backbone
from shoal.mesh._metrics import REGISTRY

__all__ = ["MetricsShipper", "metrics_subject", "snapshot"]

log = logging.getLogger("shoal.telemetry")


def metrics_subject(app: str) -> str:
    return f"shoal.{app}.telemetry.metrics"


def snapshot(registry: CollectorRegistry, service: str, instance: str, boot: str) -> dict[str, Any]:
    """The registry's families as JSON: ``{"name", "type", "help", "samples": [[n, l, v]]}``."""
    families = []
    for metric in registry.collect():
        samples = [
            [s.name, s.labels, s.value] for s in metric.samples if not s.name.endswith("_created")
        ]
        if samples:
            families.append(
                {
                    "name": metric.name,
                    "type": metric.type,
                    "help": metric.documentation,
                    "samples": samples,
                }
            )
    return {
        "service": service,
        "instance": instance,
        "boot": boot,
        "time": time.time(),
        "families": families,
    }


class MetricsShipper:
    """Publishes this process's metrics every ``interval`` seconds while it serves."""

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        instance: str,
        *,
        interval: float = 2.0,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._backbone = backbone
        self._subject = metrics_subject(app)
        self._service = service
        self._instance = instance
        self._interval = interval
        self._registry = registry
        self._boot = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None
        self.pushed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shoal-metrics-shipper")

    async def aclose(self) -> None:
        """Stop, after a last snapshot (so the final requests are counted)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.push(), 1.0)
            await asyncio.wait_for(self._backbone.nc.flush(), 1.0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.push()
            except Exception as exc:  # telemetry must never take the instance down
                log.debug("metrics shipping failed: %r", exc)

    async def push(self) -> None:
        if not self._backbone.connected:
            return
        body = snapshot(self._registry, self._service, self._instance, self._boot)
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            await self._backbone.nc.publish(self._subject, payload)
        except (nats.errors.Error, OSError):
            return
        self.pushed += 1
