"""A delivery kept alive while its handler runs.

JetStream redelivers a message nobody has acknowledged or touched (``in_progress``)
for ``ack_wait``. While a handler runs, :class:`KeepAlive` touches its delivery every
third of ``ack_wait`` when the connection is up, so a long handler is not handed to a
second instance meanwhile. It is an optimisation, not a guarantee: if the touches stop
(NATS away, the process stalled), another instance may run a redelivery of the same
event at the same time. An idempotent handler needs nothing more for that: its seen
marker is written create-only in the handler's commit, so of two commits of one event
exactly one succeeds, and the other instance skips the event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

__all__ = ["KeepAlive"]


class KeepAlive:
    """Touches ``msg`` every third of ``ack_wait`` while ``connected()``, until cancelled."""

    __slots__ = ("_connected", "_handle", "_interval", "_msg", "_task")

    def __init__(
        self,
        msg: Msg,
        ack_wait: float,
        connected: Callable[[], bool],
        *,
        schedule: bool = True,
    ) -> None:
        self._msg = msg
        self._interval = max(ack_wait / 3, 0.1)
        self._connected = connected
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        if schedule:
            self._handle = asyncio.get_running_loop().call_later(self._interval, self._fire)

    def _fire(self) -> None:
        self.touch()
        self._handle = asyncio.get_running_loop().call_later(self._interval, self._fire)

    def touch(self) -> None:
        """Send ``in_progress`` now, if connected (a send while NATS is away would fail)."""
        if self._connected():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
