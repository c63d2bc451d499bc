"""A background flush every few seconds, and a last one on the way out (telemetry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Periodic"]

log = logging.getLogger("shoal.telemetry")


class Periodic:
    """Runs ``flush`` every ``interval`` seconds from :meth:`start` until :meth:`stop`.

    A failing flush is logged at debug level and tried again next time: telemetry
    must never take an instance down. :meth:`stop` flushes once more, bounded by
    ``last_flush`` seconds, so what ended just before is not lost.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        flush: Callable[[], Awaitable[None]],
        *,
        last_flush: float = 1.0,
    ) -> None:
        self._name = name
        self._interval = interval
        self._flush = flush
        self._last_flush = last_flush
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), self._last_flush)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._flush()
            except Exception as exc:
                log.debug("%s failed: %r", self._name, exc)
