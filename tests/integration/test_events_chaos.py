"""10,000 events while consumer instances are SIGKILLed and restarted and NATS restarts.

Two subscribing services, each of two real `shoal serve` processes on the embedded
NATS (pinned port, same store): ``exact`` uses the idempotent helper (each event
marks ``seen:<n>`` and bumps its instance's counter in one state commit), ``plain``
appends each delivery to a file. Every event must reach ``plain`` at least once and
``exact`` exactly once in effect: the counters sum to exactly 10,000.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from procs import APPS, ServeProcess, serve_env

from shoal.backbone import Backbone, EmbeddedNats
from shoal.backbone._server import free_port
from shoal.events import Publisher, consumer_name, ensure_streams
from shoal.events._names import events_stream
from shoal.state import open_sqlite

pytestmark = pytest.mark.integration

APP = "chaos"
TOPIC = "chaos.tick"
TOTAL = 10_000


class Fleet:
    """The `shoal serve` processes of the test, restartable by name, all stopped at the end."""

    def __init__(self, app_dir: Path, nats_url: str) -> None:
        self.app_dir = app_dir
        self.nats_url = nats_url
        self.live: dict[str, ServeProcess] = {}
        self.every: list[ServeProcess] = []
        self.starts = 0

    def start(self, service: str, instance: str) -> None:
        env = serve_env(
            self.nats_url, app=APP, SHOAL_SERVICE=service, SHOAL_INSTANCE=instance,
            SHOAL_APP_DIR=str(self.app_dir), EVENTS_OUT=str(self.app_dir), EVENTS_TOPIC=TOPIC,
        )  # fmt: skip
        self.starts += 1
        log = self.app_dir / f"{instance}-{self.starts}.log"
        proc = ServeProcess(["events_app:app"], env, log, cwd=self.app_dir)
        self.live[instance] = proc
        self.every.append(proc)

    def kill(self, instance: str) -> None:
        self.live[instance].kill()

    def stop(self) -> None:
        for proc in self.every:
            proc.stop()


async def _publish_all(publisher: Publisher, ids: dict[int, str]) -> None:
    async def one(n: int) -> None:
        ids[n] = await publisher.publish(TOPIC, {"n": n}, key=str(n), timeout=60.0)

    for start in range(0, TOTAL, 250):  # ~4,000 a second: the chaos happens mid-stream
        await asyncio.gather(*(one(n) for n in range(start, min(start + 250, TOTAL))))
        await asyncio.sleep(0.05)


async def _chaos(fleet: Fleet, nats: EmbeddedNats, log: list[str]) -> None:
    loop = asyncio.get_running_loop()
    begun = loop.time()

    async def at(second: float) -> None:
        await asyncio.sleep(max(0.0, begun + second - loop.time()))

    for second, action in [
        (0.4, "kill exact-0"), (0.9, "kill plain-1"), (1.5, "restart nats"),
        (2.4, "kill exact-1"), (2.8, "kill plain-0"), (3.3, "kill nats"),
    ]:  # fmt: skip
        await at(second)
        verb, target = action.split()
        if target == "nats":
            if verb == "kill":
                nats.kill()
            else:
                await nats.stop()
            await asyncio.sleep(0.3)
            await nats.start()
        else:
            fleet.kill(target)
            await asyncio.sleep(0.2)
            fleet.start(target.split("-")[0], target)
        log.append(f"{loop.time() - begun:.1f}s {action}")


def _plain_seen(app_dir: Path) -> tuple[set[int], int]:
    numbers: list[int] = []
    for path in app_dir.glob("plain-*.txt"):
        numbers += [int(line) for line in path.read_text().split("\n") if line.strip().isdigit()]
    return set(numbers), len(numbers)


async def _exact_counts(app_dir: Path) -> tuple[int, int, int]:
    """(sum of the instance counters, seen keys, instance counters) in ``exact``'s store."""
    store = await open_sqlite(app_dir, "exact")
    try:
        counters = await store.list("count:")
        seen = await store.list("seen:", limit=TOTAL + 10)
        return sum(v for _, v in counters), len(seen), len(counters)
    finally:
        await store.aclose()


def test_ten_thousand_events_survive_killed_consumers_and_a_restarted_nats(
    tmp_path: Path,
) -> None:
    shutil.copy(APPS / "events_app.py", tmp_path / "events_app.py")
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    fleet: Fleet | None = None
    chaos: list[str] = []

    async def scenario() -> dict[str, float]:
        nonlocal fleet
        await nats.start()
        backbone = await Backbone.connect(nats.url, name="chaos-test")
        try:
            await ensure_streams(backbone, APP)
            fleet = Fleet(tmp_path, nats.url)
            for instance in ("exact-0", "exact-1", "plain-0", "plain-1"):
                fleet.start(instance.split("-")[0], instance)
            await _consumers_exist(backbone)
            started = time.monotonic()
            ids: dict[int, str] = {}
            await asyncio.gather(
                _publish_all(Publisher(backbone, APP, "ticker"), ids), _chaos(fleet, nats, chaos)
            )
            published = time.monotonic() - started
            assert len(set(ids.values())) == TOTAL
            async with asyncio.timeout(60):
                while True:
                    seen, _ = _plain_seen(tmp_path)
                    _, keys, _ = await _exact_counts(tmp_path)
                    if len(seen) == TOTAL and keys == TOTAL:
                        break
                    await asyncio.sleep(0.25)
            handled = time.monotonic() - started
            await asyncio.sleep(2.5)  # past ack_wait: any redelivery still due would show
            info = await backbone.js.stream_info(events_stream(APP))
            pending = [
                await backbone.js.consumer_info(events_stream(APP), consumer_name(s, TOPIC))
                for s in ("exact", "plain")
            ]
        finally:
            await backbone.aclose()
        assert info.state.messages == TOTAL  # every publish stored once, retries or not
        for consumer in pending:
            assert consumer.num_pending == 0, consumer
            assert consumer.num_ack_pending == 0, consumer
        return {"published": published, "handled": handled}

    try:
        timings = asyncio.run(scenario())
        assert fleet is not None
        for proc in fleet.live.values():
            assert proc.terminate() == 0
    finally:
        if fleet is not None:
            fleet.stop()
        asyncio.run(nats.stop())
    skipped = sum(
        p.read_text(errors="replace").count("was handled and committed before")
        for p in tmp_path.glob("exact-*.log")
    )
    seen, deliveries = _plain_seen(tmp_path)
    total, keys, counters = asyncio.run(_exact_counts(tmp_path))
    assert seen == set(range(TOTAL))  # at least once
    assert keys == TOTAL  # every event's effect in exact's store...
    assert total == TOTAL  # ...exactly once
    print(
        f"\n{TOTAL} events: published in {timings['published']:.1f} s, all handled after "
        f"{timings['handled']:.1f} s; plain saw {deliveries} deliveries "
        f"({deliveries - TOTAL} redelivered); exact: {counters} instance counters sum to "
        f"{total}, {skipped} redelivered after their commit skipped; chaos: {'; '.join(chaos)}"
    )


async def _consumers_exist(backbone: Backbone) -> None:
    async with asyncio.timeout(30):
        while True:
            infos = await backbone.js.consumers_info(events_stream(APP))
            if len(infos) == 2:
                return
            await asyncio.sleep(0.1)
