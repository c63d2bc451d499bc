"""Registration to visibility: how long until a watching client sees a new instance.

Measured on the embedded NATS over loopback: a writer connection puts a record
in the registry bucket, a separate reader connection's Discovery sees it.
Baseline, in the same run: a core NATS publish seen by a subscriber on another
connection, the floor for any push-based propagation.

    python bench/discovery_latency.py [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.registry import Discovery, EndpointCache, InstanceRecord


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _has(instance: str) -> Callable[[EndpointCache], bool]:
    return lambda cache: any(r.instance == instance for r in cache.ready("svc"))


async def registry_visibility(writer: Backbone, reader: Backbone, samples: int) -> list[float]:
    registry = NatsRegistry(writer, "bench")
    discovery = Discovery(NatsRegistry(reader, "bench"))
    await discovery.start()
    out: list[float] = []
    try:
        for i in range(samples):
            record = InstanceRecord(
                app="bench", service="svc", instance=f"svc-{i}", host="127.0.0.1",
                port=10000 + i % 50000, state="ready", started_at=time.time(), ttl=60,
            )  # fmt: skip
            start = time.perf_counter()
            await registry.put(record)
            await discovery.wait_for(_has(record.instance), timeout=5, poll=0.5)
            out.append(time.perf_counter() - start)
    finally:
        await discovery.aclose()
    return out


async def pubsub_hop(writer: Backbone, reader: Backbone, samples: int) -> list[float]:
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_msg(_msg: object) -> None:
        arrived.put_nowait(time.perf_counter())

    sub = await reader.nc.subscribe("bench.hop", cb=on_msg)
    await reader.nc.flush()
    out: list[float] = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            await writer.nc.publish("bench.hop", b"x")
            await writer.nc.flush()
            out.append(await asyncio.wait_for(arrived.get(), 5) - start)
    finally:
        await sub.unsubscribe()
    return out


async def main(samples: int) -> None:
    nats = EmbeddedNats(Path(tempfile.mkdtemp(prefix="shoal-bench-")))
    await nats.start()
    writer = await Backbone.connect(nats.url)
    reader = await Backbone.connect(nats.url)
    try:
        base = await pubsub_hop(writer, reader, samples)
        seen = await registry_visibility(writer, reader, samples)
    finally:
        await writer.aclose()
        await reader.aclose()
        await nats.stop()
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value, baseline = pct(seen, q) * 1000, pct(base, q) * 1000
        print(f"registration visible {name} {value:.3f} ms (core NATS hop {baseline:.3f} ms)")
        print(
            f"RESULT discovery_visible_{name} {value:.4g} ms "
            f"baseline={baseline:.4g} ratio={value / baseline:.3f}"
        )
    print(f"max {max(seen) * 1000:.3f} ms, mean {statistics.mean(seen) * 1000:.3f} ms")
    value, baseline = max(seen) * 1000, max(base) * 1000
    ratio = value / baseline
    print(f"RESULT discovery_visible_max {value:.4g} ms baseline={baseline:.4g} ratio={ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=300)
    asyncio.run(main(parser.parse_args().samples))
