"""Keeping this instance in the registry: register when ready, heartbeat, deregister."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shoal.exceptions import RegistryError
from shoal.registry._records import InstanceRecord
from shoal.runtime._inbound import InstanceStatus
from shoal.types import RegistryBackend

__all__ = ["Registration"]

log = logging.getLogger("shoal.runtime")


class Registration:
    """Re-puts the record every ``interval`` seconds; a failure is retried, not fatal."""

    def __init__(self, registry: RegistryBackend, status: InstanceStatus, interval: float) -> None:
        self.registry = registry
        self.status = status
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._stopping = False

    async def register(self) -> None:
        """Mark the instance ready, put it, and start heartbeating."""
        self.status.set_state("ready")
        await self._beat()
        if self._task is None:
            self._task = asyncio.create_task(self._heartbeat(), name="shoal-heartbeat")

    def refresh_now(self) -> None:
        """Heartbeat at once (the backbone came back)."""
        self._wake.set()

    async def deregister(self, timeout: float = 2.0) -> None:
        """Announce draining, then remove the entry; stop heartbeating."""
        await self._stop_heartbeat()
        record = self.status.set_state("draining")
        try:
            async with asyncio.timeout(timeout):
                await self.registry.put(record)
                await self.registry.delete(record.service, record.instance)
        except (RegistryError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("could not deregister %s (%s); it expires by itself", record.key, reason)

    async def _stop_heartbeat(self) -> None:
        # A flag as well as cancel(): nats-py may turn a cancellation inside a
        # request into its own timeout error, which the loop would survive.
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=self.interval + 3.0)

    async def _heartbeat(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                await self._beat()

    async def _beat(self) -> None:
        record: InstanceRecord = self.status.record
        try:
            await self.registry.put(record)
        except RegistryError as exc:
            if not self._failing:
                log.warning("heartbeat of %s failed: %s; retrying", record.key, exc)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat of %s is back", record.key)
        self._failing = False
