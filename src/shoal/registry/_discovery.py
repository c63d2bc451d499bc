"""Discovery: a live endpoint cache fed by a registry watch that survives outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from shoal.exceptions import BackboneError, ShoalError
from shoal.registry._cache import EndpointCache
from shoal.registry._records import InstanceRecord
from shoal.types import Clock, RegistryBackend

__all__ = ["Discovery"]

log = logging.getLogger("shoal.discovery")


class Discovery:
    """Watches a registry backend and answers "which instances of S are ready?".

    Reads never block and never touch the network. When the watch is lost the
    cache freezes (entries stop expiring) and the watch is retried; when it is
    back, a fresh snapshot replaces the cache in one step.
    """

    def __init__(
        self,
        backend: RegistryBackend,
        *,
        clock: Clock = time.monotonic,
        retry_delay: float = 0.2,
    ) -> None:
        self.backend = backend
        self.cache = EndpointCache(clock)
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()
        self._closed = False

    async def start(self, timeout: float = 5.0) -> None:
        """Start watching; return once the first snapshot is in."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shoal-discovery")
        try:
            await asyncio.wait_for(self._first_sync.wait(), timeout)
        except TimeoutError:
            raise BackboneError(
                f"the service registry did not answer within {timeout:.0f} s"
            ) from None

    async def aclose(self) -> None:
        # A flag as well as cancel(): a backend may turn the cancellation into its
        # own error, which the watch loop would survive; so never wait unbounded.
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reading ---------------------------------------------------------------

    def ready(self, service: str) -> list[InstanceRecord]:
        return self.cache.ready(service)

    def instances(self, service: str) -> list[InstanceRecord]:
        return self.cache.instances(service)

    async def wait_for(
        self,
        predicate: Callable[[EndpointCache], bool],
        timeout: float,
        *,
        poll: float = 0.05,
    ) -> None:
        """Wait until ``predicate(cache)`` holds; expiry is noticed within ``poll`` s."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self.cache.change_event()
                if predicate(self.cache):
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), poll)

    # -- the watch loop --------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            self.cache.begin_sync()
            try:
                async for update in self.backend.watch():
                    self.cache.apply(update)
                    if self.cache.synced:
                        self._first_sync.set()
            except ShoalError as exc:
                log.warning("registry watch failed: %s; retrying", exc)
            self.cache.freeze()
            await asyncio.sleep(self._retry_delay)
