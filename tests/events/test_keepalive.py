"""The delivery lease: touched while connected, lost after half of ack_wait untouched."""

from __future__ import annotations

import asyncio

import pytest

from shoal.events._keepalive import KeepAlive, LeaseLostError


class _Msg:
    def __init__(self) -> None:
        self.touches = 0

    async def in_progress(self) -> None:
        self.touches += 1


def _lease(now: list[float], up: list[bool]) -> tuple[KeepAlive, _Msg]:
    msg = _Msg()
    lease = KeepAlive(msg, 30.0, lambda: up[0], clock=lambda: now[0], schedule=False)  # type: ignore[arg-type]
    return lease, msg


async def _settle() -> None:
    await asyncio.sleep(0)  # the touches' sends run


async def test_a_lease_touched_every_third_of_ack_wait_is_held() -> None:
    now, up = [0.0], [True]
    lease, msg = _lease(now, up)
    for _ in range(10):
        now[0] += 10.0
        lease.touch()
    await _settle()
    assert lease.held()
    lease.check()
    assert msg.touches == 10


async def test_a_lease_untouched_while_nats_was_away_is_lost_for_good() -> None:
    now, up = [0.0], [True]
    lease, msg = _lease(now, up)
    up[0] = False
    for _ in range(2):  # 20 s without a touch: JetStream may redeliver at 30
        now[0] += 10.0
        lease.touch()
    up[0] = True
    now[0] += 1.0
    lease.touch()  # back: touched again, but the gap stays on record
    await _settle()
    assert msg.touches == 1
    assert not lease.held()
    with pytest.raises(LeaseLostError, match="half its ack_wait"):
        lease.check()


def test_a_stalled_handler_loses_the_lease() -> None:
    now, up = [0.0], [True]
    lease, _ = _lease(now, up)
    now[0] = 14.0
    assert lease.held()
    now[0] = 15.0
    assert not lease.held()
