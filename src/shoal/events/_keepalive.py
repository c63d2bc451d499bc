"""Keeping a delivery alive while its handler runs past a third of ``ack_wait``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.aio.msg import Msg

__all__ = ["KeepAlive"]


class KeepAlive:
    """Tells JetStream a delivery is still being worked on, every third of ``ack_wait``."""

    __slots__ = ("_handle", "_interval", "_msg", "_task")

    def __init__(self, msg: Msg, ack_wait: float) -> None:
        self._msg = msg
        self._interval = max(ack_wait / 3, 0.1)
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            self._interval, self._fire
        )

    def _fire(self) -> None:
        self._task = asyncio.create_task(self._touch())
        self._handle = asyncio.get_running_loop().call_later(self._interval, self._fire)

    async def _touch(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
