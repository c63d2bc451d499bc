"""The transactional outbox through a real embedded NATS: events committed with state
writes, relayed once, never sent for a rolled-back transaction, never lost or doubled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shoal.backbone import Backbone, EmbeddedNats
from shoal.events import Publisher, ensure_streams
from shoal.events._names import events_stream
from shoal.events._outbox import OutboxRelay
from shoal.exceptions import EventsError
from shoal.state import StateStore, open_sqlite

APP = "obx"


@pytest.fixture
async def backbone(nats_server: EmbeddedNats) -> AsyncIterator[Backbone]:
    bb = await Backbone.connect(nats_server.url)
    await ensure_streams(bb, APP)
    try:
        yield bb
    finally:
        await bb.aclose()


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StateStore]:
    monkeypatch.setenv("SHOAL_SERVICE", "orders")  # the publishing service, outside shoal serve
    opened = await open_sqlite(tmp_path, "orders")
    try:
        yield opened
    finally:
        await opened.aclose()


async def stored_ids(bb: Backbone) -> list[str]:
    """The ce-id of every event in the app's stream, in order."""
    info = await bb.js.stream_info(events_stream(APP))
    if not info.state.messages:
        return []
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bb.js.get_msg(events_stream(APP), seq)
        assert msg.headers is not None
        ids.append(msg.headers["ce-id"])
    return ids


async def eventually(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - a counter, not an event to wait on
            await asyncio.sleep(0.01)


def relay_of(store: StateStore, bb: Backbone) -> OutboxRelay:
    async def source() -> StateStore:
        return store

    return OutboxRelay(source, Publisher(bb, APP, "orders"))


async def test_an_event_is_committed_with_the_writes_and_relayed_once(
    store: StateStore, backbone: Backbone
) -> None:
    async with store.transaction() as tx:
        tx.set("order:7", {"status": "placed"})
        event_id = tx.publish("orders.placed", {"order": 7}, key="7")
    pending = await store.backend.outbox_pending(10)
    assert [r.id for r in pending] == [event_id]  # stored with the write, not yet sent
    assert json.loads(pending[0].payload)["headers"]["ce-source"] == "orders"
    assert await stored_ids(backbone) == []

    relay = relay_of(store, backbone)
    assert await relay.relay_once() == 1
    assert await stored_ids(backbone) == [event_id]
    assert await store.backend.outbox_pending(10) == []
    msg = await backbone.js.get_msg(events_stream(APP), 1)
    assert msg.subject == "shoal.obx.events.orders.orders.placed"
    assert json.loads(msg.data or b"") == {"order": 7}
    assert msg.headers is not None
    assert msg.headers["ce-partitionkey"] == "7"


async def test_a_rolled_back_transaction_publishes_nothing(
    store: StateStore, backbone: Backbone
) -> None:
    async def place_then_fail() -> None:
        async with store.transaction() as tx:
            tx.set("order:8", {"status": "placed"})
            tx.publish("orders.placed", {"order": 8})
            raise RuntimeError("declined")

    with pytest.raises(RuntimeError, match="declined"):
        await place_then_fail()
    assert await store.get("order:8") is None
    assert await store.backend.outbox_pending(10) == []
    assert await relay_of(store, backbone).relay_once() == 0
    assert await stored_ids(backbone) == []


async def test_bad_input_fails_in_the_transaction_and_nothing_is_committed(
    store: StateStore,
) -> None:
    async def place(topic: str, data: object) -> None:
        async with store.transaction() as tx:
            tx.set("order:9", 1)
            tx.publish(topic, data)

    with pytest.raises(EventsError, match="not JSON-serialisable"):
        await place("orders.placed", {"when": object()})
    with pytest.raises(EventsError, match="topic"):
        await place("orders.*", {})
    assert await store.get("order:9") is None
    assert await store.backend.outbox_pending(10) == []


async def test_a_crash_after_sending_but_before_removing_sends_again_and_is_stored_once(
    store: StateStore, backbone: Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with store.transaction() as tx:
        first = tx.publish("orders.placed", {"order": 1})
        second = tx.publish("orders.placed", {"order": 2})

    async def crash(ids: object) -> None:
        raise SystemExit("killed between the ack and the removal")

    monkeypatch.setattr(store.backend, "outbox_remove", crash)
    with pytest.raises(SystemExit):
        await relay_of(store, backbone).relay_once()
    monkeypatch.undo()
    assert await stored_ids(backbone) == [first, second]
    assert len(await store.backend.outbox_pending(10)) == 2  # still there: sent again

    assert await relay_of(store, backbone).relay_once() == 2
    assert await stored_ids(backbone) == [first, second]  # the duplicates were dropped
    assert await store.backend.outbox_pending(10) == []


async def test_the_relay_wakes_on_a_commit_and_keeps_events_while_nats_is_away(
    store: StateStore, backbone: Backbone, nats_server: EmbeddedNats
) -> None:
    relay = relay_of(store, backbone)
    store.on_outbox = relay.wake
    task = asyncio.create_task(relay.run(at_once=False))
    try:
        async with store.transaction() as tx:
            woken = tx.publish("orders.placed", {"order": 3})
        await eventually(lambda: relay.relayed >= 1, 5)
        assert await stored_ids(backbone) == [woken]

        await nats_server.stop()
        async with store.transaction() as tx:
            later = tx.publish("orders.placed", {"order": 4})
        await asyncio.sleep(0.3)
        assert [r.id for r in await store.backend.outbox_pending(10)] == [later]
        await nats_server.start()
        await eventually(lambda: relay.relayed >= 2, 20)
        assert await stored_ids(backbone) == [woken, later]
        assert await store.backend.outbox_pending(10) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
