"""A delivery's lease: kept alive while its handler runs, and checked before a commit.

JetStream redelivers a message nobody has acknowledged or touched (``in_progress``)
for ``ack_wait``. While a handler runs, :class:`KeepAlive` touches its delivery every
third of ``ack_wait`` when the connection is up. If the touches stopped for half of
``ack_wait`` or more (NATS was away, the process stalled), another instance may
already hold a redelivery of the same event: :meth:`KeepAlive.held` is then False,
and an idempotent handler's transaction is rolled back instead of committed (its
marker could not stop two commits racing), leaving the event to the redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from shoal.exceptions import EventsError

__all__ = ["KeepAlive", "LeaseLostError"]


class LeaseLostError(EventsError):
    """The delivery went untouched for half its ``ack_wait``: it may be redelivered already."""


class KeepAlive:
    """Touches ``msg`` every third of ``ack_wait`` while ``connected()``; knows the longest
    stretch without a touch (the delivery's receipt counts as the first)."""

    __slots__ = (
        "_clock", "_connected", "_handle", "_interval", "_last", "_limit", "_longest", "_msg",
        "_task",
    )  # fmt: skip

    def __init__(
        self,
        msg: Msg,
        ack_wait: float,
        connected: Callable[[], bool],
        *,
        clock: Callable[[], float] | None = None,
        schedule: bool = True,
    ) -> None:
        self._msg = msg
        self._interval = max(ack_wait / 3, 0.1)
        self._limit = ack_wait / 2
        self._connected = connected
        self._clock = clock or asyncio.get_running_loop().time
        self._last = self._clock()
        self._longest = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        if schedule:
            self._handle = asyncio.get_running_loop().call_later(self._interval, self._fire)

    def _fire(self) -> None:
        self.touch()
        self._handle = asyncio.get_running_loop().call_later(self._interval, self._fire)

    def touch(self) -> None:
        """Send ``in_progress`` now, if connected (else the stretch without one goes on)."""
        if not self._connected():
            return
        now = self._clock()
        self._longest = max(self._longest, now - self._last)
        self._last = now
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def held(self) -> bool:
        """Whether JetStream has surely not redelivered the message (yet)."""
        return max(self._longest, self._clock() - self._last) < self._limit

    def check(self) -> None:
        if not self.held():
            raise LeaseLostError(
                "the delivery went without a keep-alive for half its ack_wait (NATS away, "
                "or the process stalled); rolled back, left to its redelivery"
            )

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
