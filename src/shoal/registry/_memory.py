"""An in-memory registry backend for tests and for a mesh within one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from shoal.registry._records import Delete, InstanceRecord, Put, RegistryUpdate, Synced
from shoal.types import Clock

__all__ = ["MemoryRegistry"]


class MemoryRegistry:
    """Implements the ``RegistryBackend`` protocol in memory.

    ``disconnect()`` ends every open watch, as a lost backbone connection does.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[InstanceRecord, float]] = {}
        self._watchers: list[asyncio.Queue[RegistryUpdate | None]] = []
        self._online = asyncio.Event()
        self._online.set()

    async def put(self, record: InstanceRecord) -> None:
        self._entries[record.key] = (record, self._clock())
        self._broadcast(Put(record))

    async def delete(self, service: str, instance: str) -> None:
        if self._entries.pop(f"{service}.{instance}", None) is not None:
            self._broadcast(Delete(service, instance))

    async def watch(self) -> AsyncIterator[RegistryUpdate]:
        await self._online.wait()
        queue: asyncio.Queue[RegistryUpdate | None] = asyncio.Queue()
        now = self._clock()
        for record, written in list(self._entries.values()):
            queue.put_nowait(Put(record, age=now - written))
        queue.put_nowait(Synced())
        self._watchers.append(queue)
        try:
            while (update := await queue.get()) is not None:
                yield update
        finally:
            if queue in self._watchers:
                self._watchers.remove(queue)

    def disconnect(self) -> None:
        """End every watch, and hold new ones until ``reconnect()``."""
        self._online.clear()
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()

    def reconnect(self) -> None:
        self._online.set()

    async def aclose(self) -> None:
        self.disconnect()

    def _broadcast(self, update: RegistryUpdate) -> None:
        for queue in self._watchers:
            queue.put_nowait(update)
