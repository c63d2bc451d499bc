"""One contract, every registry backend: in memory and on the real embedded NATS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.registry import Discovery, InstanceRecord, InstanceState, MemoryRegistry
from shoal.testing import ManualClock
from shoal.types import RegistryBackend


@dataclass
class Harness:
    writer: RegistryBackend
    discovery: Discovery
    clock: ManualClock
    outage: Callable[[], Awaitable[None]]
    recover: Callable[[], Awaitable[None]]


def record(instance: str, *, state: InstanceState = "ready", ttl: float = 3.0) -> InstanceRecord:
    return InstanceRecord(
        app="shop",
        service="catalog",
        instance=instance,
        host="127.0.0.1",
        port=8000 + int(instance[-1]),
        state=state,
        started_at=time.time(),
        ttl=ttl,
    )


@pytest.fixture(params=["memory", "nats"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock()
    if request.param == "memory":
        memory = MemoryRegistry(clock)

        async def mem_outage() -> None:
            memory.disconnect()

        async def mem_recover() -> None:
            memory.reconnect()

        discovery = Discovery(memory, clock=clock, retry_delay=0.01)
        await discovery.start()
        yield Harness(memory, discovery, clock, mem_outage, mem_recover)
        await discovery.aclose()
        return
    server = EmbeddedNats(tmp_path)
    await server.start()
    writer_bb = await Backbone.connect(server.url)
    reader_bb = await Backbone.connect(server.url)
    discovery = Discovery(NatsRegistry(reader_bb, "shop"), clock=clock, retry_delay=0.05)

    async def nats_outage() -> None:
        server.kill()

    async def nats_recover() -> None:
        await server.start()

    try:
        await discovery.start()
        yield Harness(NatsRegistry(writer_bb, "shop"), discovery, clock, nats_outage, nats_recover)
    finally:
        await discovery.aclose()
        await writer_bb.aclose()
        await reader_bb.aclose()
        await server.stop()


def ready_ids(h: Harness) -> set[str]:
    return {r.instance for r in h.discovery.ready("catalog")}


async def test_registered_instance_is_seen_by_watchers_within_100ms(harness: Harness) -> None:
    start = time.perf_counter()
    await harness.writer.put(record("c1"))
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 1, timeout=2)
    assert time.perf_counter() - start < 0.1
    assert ready_ids(harness) == {"c1"}


async def test_new_watcher_gets_a_snapshot_of_existing_instances(harness: Harness) -> None:
    await harness.writer.put(record("c1"))
    await harness.writer.put(record("c2"))
    late = Discovery(harness.discovery.backend, clock=harness.clock)
    await late.start()
    try:
        assert {r.instance for r in late.ready("catalog")} == {"c1", "c2"}
    finally:
        await late.aclose()


async def test_deregistered_instance_disappears(harness: Harness) -> None:
    await harness.writer.put(record("c1"))
    await harness.writer.put(record("c2"))
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 2, timeout=2)
    await harness.writer.delete("catalog", "c1")
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 1, timeout=2)
    assert ready_ids(harness) == {"c2"}


async def test_only_ready_instances_take_traffic(harness: Harness) -> None:
    await harness.writer.put(record("c1", state="starting"))
    await harness.writer.put(record("c2", state="ready"))
    await harness.writer.put(record("c3", state="draining"))
    await harness.discovery.wait_for(lambda c: len(c.instances("catalog")) == 3, timeout=2)
    assert ready_ids(harness) == {"c2"}


async def test_instance_expires_ttl_after_its_last_heartbeat(harness: Harness) -> None:
    await harness.writer.put(record("c1", ttl=3.0))
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 1, timeout=2)
    harness.clock.advance(2.5)
    assert ready_ids(harness) == {"c1"}
    seen = harness.discovery.cache.generation
    await harness.writer.put(record("c1", ttl=3.0))  # heartbeat
    await harness.discovery.wait_for(lambda c: c.generation > seen, timeout=2)
    harness.clock.advance(2.5)
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 1, timeout=2)
    harness.clock.advance(0.6)
    assert ready_ids(harness) == set()


async def test_cache_keeps_serving_through_an_outage_and_resyncs(harness: Harness) -> None:
    await harness.writer.put(record("c1", ttl=3.0))
    await harness.discovery.wait_for(lambda c: len(c.ready("catalog")) == 1, timeout=2)
    await harness.outage()
    await harness.discovery.wait_for(lambda c: c.frozen, timeout=5)
    harness.clock.advance(60)  # far past the TTL: a frozen cache does not expire
    assert ready_ids(harness) == {"c1"}
    await harness.recover()
    await harness.discovery.wait_for(lambda c: not c.frozen, timeout=10)
    await harness.writer.put(record("c2", ttl=3.0))
    await harness.discovery.wait_for(lambda c: "c2" in {r.instance for r in c.ready("catalog")}, 5)
