"""Shipping an instance's metrics to the supervisor, which serves the whole app's.

Every ``interval`` seconds (and once more on the way out) a serving instance
publishes a snapshot of its registry (``shoal.mesh._metrics.REGISTRY``) on
``shoal.<app>.telemetry.metrics``: cumulative values, as Prometheus keeps them, so
a lost snapshot loses nothing but freshness. ``boot`` tells the supervisor that a
restarted instance's counters started again from zero.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import nats.errors
from prometheus_client import CollectorRegistry

from shoal.backbone._connection import Backbone
from shoal.mesh._metrics import REGISTRY
from shoal.runtime._periodic import Periodic

__all__ = ["MetricsShipper", "metrics_subject", "snapshot"]


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
        self._registry = registry
        self._boot = secrets.token_hex(8)
        self._periodic = Periodic("shoal-metrics-shipper", interval, self.push)
        self._final = False
        self.pushed = 0

    def start(self) -> None:
        self._periodic.start()

    async def aclose(self) -> None:
        """Stop, after a last snapshot (so the final requests are counted)."""
        self._final = True
        await self._periodic.stop()

    async def push(self) -> None:
        if not self._backbone.connected:
            return
        body = snapshot(self._registry, self._service, self._instance, self._boot)
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            await self._backbone.nc.publish(self._subject, payload)
            if self._final:  # the process is about to close NATS: see it sent
                await self._backbone.nc.flush(timeout=1)
        except (nats.errors.Error, OSError):
            return
        self.pushed += 1
