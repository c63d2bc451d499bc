"""The mesh client against real `shoal serve` processes and a real NATS backbone."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from procs import serving

import shoal
from shoal.backbone import EmbeddedNats
from shoal.registry import Discovery

pytestmark = pytest.mark.integration


async def stream_calls(
    http: httpx.AsyncClient, stop: asyncio.Event, seen: Counter[str], failures: list[str]
) -> None:
    """Sequential GETs until ``stop`` (bounded to 5,000 calls)."""
    for _ in range(5_000):
        if stop.is_set():
            return
        try:
            response = await http.get("http://echo/work")
            if response.status_code != 200:
                failures.append(f"status {response.status_code}")
            seen[response.headers["shoal-instance"]] += 1
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
        await asyncio.sleep(0.002)


async def test_three_instances_share_300_calls(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    with serving(3, nats_server.url, tmp_path):
        await itest_view.wait_for(lambda c: len(c.ready("echo")) == 3, timeout=30)
        async with shoal.client(nats_url=nats_server.url, app="itest") as http:
            responses = await asyncio.gather(
                *(http.get(f"http://echo/item/{i}") for i in range(300))
            )
    assert all(r.status_code == 200 for r in responses)
    spread = Counter(r.headers["shoal-instance"] for r in responses)
    assert set(spread) == {"echo-0", "echo-1", "echo-2"}
    assert min(spread.values()) >= 30, spread
    assert responses[7].text == f"{responses[7].headers['shoal-instance']} /item/7"


async def test_sigkilled_instance_costs_no_call_and_leaves_the_registry_within_3s(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()
    with serving(3, nats_server.url, tmp_path) as procs:
        await itest_view.wait_for(lambda c: len(c.ready("echo")) == 3, timeout=30)
        async with shoal.client(nats_url=nats_server.url, app="itest") as http:
            calls = asyncio.create_task(stream_calls(http, stop, seen, failures))
            await asyncio.sleep(0.5)
            killed_at = time.monotonic()
            procs[1].kill()
            await itest_view.wait_for(
                lambda c: "echo-1" not in {r.instance for r in c.instances("echo")}, timeout=5
            )
            gone_after = time.monotonic() - killed_at
            before = sum(seen.values())
            await asyncio.sleep(0.5)
            stop.set()
            await calls
    assert failures == []
    assert gone_after < 3.0
    assert sum(seen.values()) > before, "calls went on after the kill"
    assert seen["echo-0"] > 0
    assert seen["echo-2"] > 0


async def test_calls_keep_working_while_nats_restarts(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()
    with serving(2, nats_server.url, tmp_path):
        await itest_view.wait_for(lambda c: len(c.ready("echo")) == 2, timeout=30)
        async with shoal.client(nats_url=nats_server.url, app="itest") as http:
            calls = asyncio.create_task(stream_calls(http, stop, seen, failures))
            await asyncio.sleep(0.3)
            nats_server.kill()
            await asyncio.sleep(1.5)
            during = sum(seen.values())
            await nats_server.start()
            await itest_view.wait_for(lambda c: not c.frozen, timeout=10)
            await asyncio.sleep(3.0)  # past a TTL: heartbeats must have resumed
            await itest_view.wait_for(lambda c: len(c.ready("echo")) == 2, timeout=5)
            stop.set()
            await calls
    assert failures == []
    assert during > 0
    assert set(seen) == {"echo-0", "echo-1"}
