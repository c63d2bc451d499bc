"""The delivery keep-alive: touched every third of ack_wait while connected, until cancelled."""

from __future__ import annotations

import asyncio

from shoal.events._keepalive import KeepAlive


class _Msg:
    def __init__(self) -> None:
        self.touches = 0

    async def in_progress(self) -> None:
        self.touches += 1


async def test_a_delivery_is_touched_only_while_connected() -> None:
    msg, up = _Msg(), [True]
    keepalive = KeepAlive(msg, 30.0, lambda: up[0], schedule=False)  # type: ignore[arg-type]
    keepalive.touch()
    up[0] = False
    keepalive.touch()  # NATS away: no send that could only fail
    up[0] = True
    keepalive.touch()
    await asyncio.sleep(0)  # the touches' sends run
    assert msg.touches == 2


async def test_touches_come_every_third_of_ack_wait_and_stop_when_cancelled() -> None:
    msg = _Msg()
    keepalive = KeepAlive(msg, 0.3, lambda: True)  # type: ignore[arg-type]
    await asyncio.sleep(0.35)  # about three touches, one every 0.1 s
    keepalive.cancel()
    touched = msg.touches
    assert 1 <= touched <= 4
    await asyncio.sleep(0.25)
    assert msg.touches == touched
