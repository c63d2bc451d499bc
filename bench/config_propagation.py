"""How fast a config change reaches the instances: shoal's live config against raw nats-py.

One embedded NATS; WATCHERS instances' worth of `LiveConfig` (each on its own connection as
the service's own NATS user, as under `shoal up`) and, in the same run, as many raw nats-py
`KeyValue.watch` watchers on the same key. Each round puts one new value with
`ConfigStore.set` and times, from just before the put, until the last watcher of each kind
has it (shoal: the change callback ran; raw: the entry arrived). Figures: median and max
over ROUNDS rounds.

    python bench/config_propagation.py [--watchers 3] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvloop
from _machine import cpu_steal, source_state

from shoal.backbone import Backbone, EmbeddedNats
from shoal.backbone._connection import inbox_prefix
from shoal.config._layout import bucket_name
from shoal.config._runtime import LiveConfig
from shoal.config._store import ConfigStore

APP, SERVICE, KEY = "bench", "catalog", "round"


class Arrivals:
    """When each watcher saw each round (perf_counter), and an event per new arrival."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.changed = asyncio.Event()

    def record(self, watcher: str, number: int) -> None:
        self.seen.setdefault((watcher, number), time.perf_counter())
        self.changed.set()

    async def wait_all(self, watchers: list[str], number: int) -> float:
        async with asyncio.timeout(10.0):
            while not all((w, number) in self.seen for w in watchers):
                self.changed.clear()
                await self.changed.wait()
        return max(self.seen[(w, number)] for w in watchers)


async def _raw_watch(backbone: Backbone, name: str, arrivals: Arrivals) -> None:
    kv = await backbone.js.key_value(bucket_name(APP, SERVICE))
    watcher = await kv.watch(f"config.override.{KEY}")
    async for entry in watcher:
        if entry is not None and entry.value:
            arrivals.record(name, int(entry.value))


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    steal = cpu_steal()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp))
        await server.add_services(APP, [SERVICE])
        await server.start()
        opened: list[Any] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            admin = await Backbone.connect(server.url)
            opened.append(admin)
            store = ConfigStore(admin, APP)
            await store.publish_manifest(SERVICE, {KEY: 0})
            arrivals = Arrivals()
            shoal_names = [f"shoal-{i}" for i in range(args.watchers)]
            raw_names = [f"raw-{i}" for i in range(args.watchers)]
            for name in shoal_names:
                conn = await Backbone.connect(
                    server.service_url(SERVICE), inbox_prefix=inbox_prefix(SERVICE)
                )

                def on_change(
                    values: Mapping[str, Any], keys: frozenset[str], name: str = name
                ) -> None:
                    arrivals.record(name, int(values[KEY]))

                live = LiveConfig(conn, APP, SERVICE, name, callbacks=[on_change])
                await live.start()
                opened += [live, conn]
            for name in raw_names:
                conn = await Backbone.connect(server.url)
                opened.append(conn)
                tasks.append(asyncio.create_task(_raw_watch(conn, name, arrivals)))
            await asyncio.sleep(0.5)
            shoal_ms, raw_ms = [], []
            for number in range(1, args.rounds + 1):
                start = time.perf_counter()
                await store.set(SERVICE, {KEY: number})
                shoal_ms.append((await arrivals.wait_all(shoal_names, number) - start) * 1000)
                raw_ms.append((await arrivals.wait_all(raw_names, number) - start) * 1000)
                await asyncio.sleep(0.01)
        finally:
            for task in tasks:
                task.cancel()
            for thing in reversed(opened):
                await thing.aclose()
            await server.stop()
    stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
    print(f"cpu steal during the run: {100 * stolen / max(total, 1):.1f}%")
    print(f"{args.rounds} changes, each until the last of {args.watchers} watchers has it:")
    for label, figures in (("shoal LiveConfig", shoal_ms), ("raw nats-py watch", raw_ms)):
        print(
            f"  {label:<18} median {statistics.median(figures):6.2f} ms   "
            f"max {max(figures):6.2f} ms"
        )
    for name, pick in (("median", statistics.median), ("max", max)):
        ours, raw = pick(shoal_ms), pick(raw_ms)
        print(
            f"RESULT config_propagation_{name} {ours:.3g} ms baseline={raw:.3g} "
            f"ratio={ours / raw:.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=50)
    uvloop.run(main(parser.parse_args()))
