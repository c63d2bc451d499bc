"""Events through a real embedded NATS, in one process: the wire, duplicates, bad input,
retries and dead letters, replay, idempotent handlers, traces, unpublished topics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import shoal
from shoal.backbone import Backbone, EmbeddedNats
from shoal.events import Publisher, Subscriber, ensure_streams, make_subscription
from shoal.events._admin import dead_letters, events_overview, replay_dead_letters
from shoal.events._deadletter import send_dead_letter
from shoal.events._names import dlq_stream, events_stream
from shoal.exceptions import EventsError, PublishError
from shoal.mesh import _spans
from shoal.state import StateStore, Transaction, open_sqlite

APP = "evt"


@pytest.fixture
async def backbone(nats_server: EmbeddedNats) -> AsyncIterator[Backbone]:
    bb = await Backbone.connect(nats_server.url)
    await ensure_streams(bb, APP)
    try:
        yield bb
    finally:
        await bb.aclose()


async def _eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def _stream_messages(bb: Backbone) -> int:
    return (await bb.js.stream_info(events_stream(APP))).state.messages


async def test_events_are_cloudevents_and_a_republished_id_is_stored_once(
    backbone: Backbone,
) -> None:
    publisher = Publisher(backbone, APP, "orders")
    event_id = await publisher.publish(
        "order.created", {"order": 7}, key="7", headers={"x-tenant": "acme"}
    )
    raw = await backbone.js.get_msg(events_stream(APP), 1)
    assert raw.subject == "shoal.evt.events.orders.order.created"
    headers = raw.headers or {}
    assert headers["Nats-Msg-Id"] == event_id == headers["ce-id"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-source"] == "orders"
    assert headers["ce-type"] == "order.created"
    assert headers["ce-time"].endswith("Z")
    assert headers["content-type"] == "application/json"
    assert headers["ce-partitionkey"] == "7"
    assert headers["x-tenant"] == "acme"
    assert raw.data == b'{"order":7}'

    again = publisher.encode("order.created", {"order": 8})
    await publisher.send(again)
    await publisher.send(again)  # a retry, an outbox relay after a crash: same id
    assert await _stream_messages(backbone) == 2

    got: list[shoal.Event] = []

    async def handler(event: shoal.Event) -> None:
        got.append(event)

    subscriber = Subscriber(backbone, APP, "billing", [make_subscription("order.created", handler)])
    await subscriber.start()
    try:
        await _eventually(lambda: len(got) == 2)
        await asyncio.sleep(0.2)
    finally:
        await subscriber.aclose()
    assert [e.id for e in got] == [event_id, again.id]
    first = got[0]
    assert (first.source, first.type, first.key, first.data) == (
        "orders",
        "order.created",
        "7",
        {"order": 7},
    )
    assert first.headers == {"x-tenant": "acme"}
    assert first.delivery == 1


async def test_bad_input_raises_events_error_and_publishes_nothing(backbone: Backbone) -> None:
    publisher = Publisher(backbone, APP, "orders")
    with pytest.raises(EventsError, match=r"'order.created'.*type set is not JSON"):
        await publisher.publish("order.created", {"tags": {"a", "b"}})
    with pytest.raises(EventsError, match="not valid"):
        await publisher.publish("order.*", {})
    with pytest.raises(EventsError, match="reserved"):
        await publisher.publish("order.created", {}, headers={"ce-id": "mine"})
    assert await _stream_messages(backbone) == 0


async def test_a_failing_handler_is_dead_lettered_after_max_deliveries_and_replayed(
    backbone: Backbone,
) -> None:
    deliveries: list[int] = []
    audited: list[str] = []

    async def broken(event: shoal.Event) -> None:
        deliveries.append(event.delivery)
        raise ValueError(f"cannot bill order {event.data['order']}")

    async def audit(event: shoal.Event) -> None:
        audited.append(event.id)

    billing = Subscriber(
        backbone, APP, "billing",
        [make_subscription("order.created", broken, max_deliveries=3, backoff=(0.05, 0.1))],
    )  # fmt: skip
    auditor = Subscriber(backbone, APP, "audit", [make_subscription("order.created", audit)])
    await billing.start()
    await auditor.start()
    event_id = await Publisher(backbone, APP, "orders").publish("order.created", {"order": 9})
    try:
        await _eventually(lambda: _dead(backbone))
        await asyncio.sleep(0.5)  # no fourth delivery comes
    finally:
        await billing.aclose()
    assert deliveries == [1, 2, 3]
    (letter,) = await dead_letters(backbone, APP)
    assert letter["id"] == event_id
    assert letter["service"] == "billing"
    assert letter["topic"] == "order.created"
    assert letter["source"] == "orders"
    assert letter["error"] == "ValueError: cannot bill order 9"
    assert letter["deliveries"] == 3
    overview = await events_overview(backbone, APP)
    assert overview["dead_letters"]["count"] == 1
    rows = {(c["service"], c["topic"]): c for c in overview["consumers"]}
    assert rows["billing", "order.created"]["ack_pending"] == 0

    fixed: list[shoal.Event] = []

    async def repaired(event: shoal.Event) -> None:
        fixed.append(event)

    billing = Subscriber(backbone, APP, "billing", [make_subscription("order.created", repaired)])
    await billing.start()
    try:
        replayed = await replay_dead_letters(backbone, APP, replay_all=True)
        assert [r["id"] for r in replayed] == [event_id]
        await _eventually(lambda: len(fixed) == 1)
        await asyncio.sleep(0.3)
    finally:
        await billing.aclose()
        await auditor.aclose()
    assert fixed[0].id == event_id
    assert fixed[0].data == {"order": 9}
    assert fixed[0].delivery == 1
    assert await dead_letters(backbone, APP) == []
    assert audited == [event_id]  # the replay went to billing alone
    with pytest.raises(EventsError, match="no dead letter with id nope"):
        await replay_dead_letters(backbone, APP, ids=["nope"])


async def _dead(backbone: Backbone) -> bool:
    return len(await dead_letters(backbone, APP)) == 1


async def test_an_idempotent_handler_commits_once_and_skips_a_redelivered_event(
    backbone: Backbone, tmp_path: Path
) -> None:
    store = await open_sqlite(tmp_path, "billing")
    calls: list[str] = []

    async def count(event: shoal.Event, tx: Transaction) -> None:
        calls.append(event.id)
        tx.set("count", (await tx.get("count") or 0) + 1)
        tx.set(f"order:{event.data['order']}", event.id)

    sub = make_subscription("order.created", count, idempotent=True, backoff=(0.05,))
    subscriber = Subscriber(backbone, APP, "billing", [sub], store=store)
    await subscriber.start()
    try:
        event_id = await Publisher(backbone, APP, "orders").publish("order.created", {"order": 1})
        await _eventually(lambda: len(calls) == 1)
        # The same event again, as after a lost ack: its marker is committed, so it is skipped.
        raw = await backbone.js.get_msg(events_stream(APP), 1)
        headers = {k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"}
        await backbone.js.publish(
            "shoal.evt.replay.billing.order.created", raw.data or b"", headers=headers
        )
        consumer = subscriber.consumers[0]
        await _eventually(lambda: consumer.skipped == 1)
    finally:
        await subscriber.aclose()
        await store.aclose()
    store = await open_sqlite(tmp_path, "billing")
    try:
        assert calls == [event_id]
        assert await store.get("count") == 1
        assert await store.get("order:1") == event_id
    finally:
        await store.aclose()


async def test_two_instances_running_one_event_at_once_commit_it_once(
    backbone: Backbone, tmp_path: Path
) -> None:
    """A redelivery handled by a second instance while the first still runs the event
    (here: the event again on the replay subject): both handlers run, both commits are
    attempted, exactly one lands; the other finds the marker and skips the event."""
    stores = [await open_sqlite(tmp_path, "billing") for _ in range(2)]
    inside: list[str] = []
    both_inside = asyncio.Event()

    def handler(instance: str) -> Callable[[shoal.Event, Transaction], Awaitable[None]]:
        async def handle(event: shoal.Event, tx: Transaction) -> None:
            inside.append(instance)
            if len(inside) == 2:
                both_inside.set()
            await asyncio.wait_for(both_inside.wait(), 10)  # both past the marker check
            tx.set(f"handled-by:{instance}", event.id)

        return handle

    def instance(name: str, store: StateStore) -> Subscriber:
        sub = make_subscription("order.paid", handler(name), idempotent=True, concurrency=1)
        return Subscriber(backbone, APP, "billing", [sub], store=store)

    subscribers = [instance(name, store) for name, store in zip("ab", stores, strict=True)]
    try:
        await subscribers[0].start()
        event_id = await Publisher(backbone, APP, "orders").publish("order.paid", {"order": 1})
        await _eventually(lambda: inside == ["a"])
        await subscribers[1].start()  # a holds its one slot: the copy goes to b
        raw = await backbone.js.get_msg(events_stream(APP), 1)
        headers = {k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"}
        await backbone.js.publish(
            "shoal.evt.replay.billing.order.paid", raw.data or b"", headers=headers
        )
        consumers = [s.consumers[0] for s in subscribers]
        await _eventually(lambda: sum(c.handled for c in consumers) == 2)
        assert sorted(inside) == ["a", "b"]
        assert sum(c.skipped for c in consumers) == 1
        assert sum(c.retried + c.dead_lettered for c in consumers) == 0
        committed = await stores[0].list("handled-by:")
        assert len(committed) == 1, committed
        assert committed[0][1] == event_id
    finally:
        for subscriber in subscribers:
            await subscriber.aclose()
        for store in stores:
            await store.aclose()


async def test_the_consumer_span_is_a_child_of_the_publishers(backbone: Backbone) -> None:
    spans: list[_spans.SpanData] = []
    seen: list[int] = []

    async def handler(event: shoal.Event) -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    previous = _spans.install(1.0, spans.append)
    subscriber = Subscriber(backbone, APP, "billing", [make_subscription("order.paid", handler)])
    try:
        await subscriber.start()
        await Publisher(backbone, APP, "orders").publish("order.paid", {"order": 3})
        await _eventually(lambda: len(spans) == 2)
    finally:
        await subscriber.aclose()
        _spans.set_active(previous)
    producer, consumer = sorted(spans, key=lambda s: s.kind != "producer")
    assert (producer.kind, consumer.kind) == ("producer", "consumer")
    assert consumer.trace_id == producer.trace_id
    assert consumer.parent_id == producer.span_id
    assert consumer.attributes["messaging.destination.name"] == "order.paid"
    assert seen == [consumer.span_id]  # current while the handler ran


async def test_a_topic_nobody_publishes_is_named_in_a_warning(
    backbone: Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    await Publisher(backbone, APP, "orders").publish("order.created", {})

    async def handler(event: shoal.Event) -> None:
        pass

    subscriber = Subscriber(backbone, APP, "billing", [make_subscription("order.craeted", handler)])
    with caplog.at_level(logging.WARNING, logger="shoal.events"):
        await subscriber.start()
    await subscriber.aclose()
    assert subscriber.unpublished == ["order.craeted"]
    text = caplog.text
    assert "'order.craeted'" in text
    assert "no service of app evt has published" in text
    assert "Did you mean 'order.created'" in text


async def test_idempotent_handlers_need_a_store(backbone: Backbone) -> None:
    async def handler(event: shoal.Event, tx: Any) -> None:
        pass

    sub = make_subscription("t", handler, idempotent=True)
    with pytest.raises(EventsError, match="needs the service's state store"):
        await Subscriber(backbone, APP, "billing", [sub]).start()


async def test_draining_lets_a_running_handler_finish(backbone: Backbone) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(event: shoal.Event) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    subscriber = Subscriber(backbone, APP, "billing", [make_subscription("t", slow)])
    await subscriber.start()
    await Publisher(backbone, APP, "orders").publish("t", {})
    await asyncio.wait_for(started.wait(), 10)
    await subscriber.drain(5.0)
    assert finished.is_set()
    name = subscriber.consumers[0].name

    async def settled() -> bool:  # the server applies an ack after sending earlier replies
        info = await backbone.js.consumer_info(events_stream(APP), name)
        return bool(info.num_ack_pending == 0 and info.num_pending == 0)

    await _eventually(settled, timeout=5)


async def test_a_dead_letter_stored_twice_after_a_crash_is_kept_once(backbone: Backbone) -> None:
    await Publisher(backbone, APP, "orders").publish("t", {"n": 1})
    pull = await backbone.js.pull_subscribe(
        "shoal.evt.events.*.t", "raw", stream=events_stream(APP)
    )
    (msg,) = await pull.fetch(1, timeout=5)
    headers = dict(msg.headers or {})
    for _ in range(2):  # stored, then the process died before term(): redelivered, stored again
        await send_dead_letter(
            backbone, APP, "billing", "billing_t", msg, headers,
            delivery=5, error="ValueError: x", event_id=headers["ce-id"], topic="t",
        )  # fmt: skip
    letters = await dead_letters(backbone, APP)
    assert [d["id"] for d in letters] == [headers["ce-id"]]


async def test_a_publisher_sends_only_its_own_services_events(backbone: Backbone) -> None:
    foreign = Publisher(backbone, APP, "orders").encode("t", {})
    with pytest.raises(EventsError, match="encoded for service 'orders'"):
        await Publisher(backbone, APP, "billing").send(foreign)


async def test_a_deleted_consumer_is_made_again(backbone: Backbone) -> None:
    got: list[str] = []

    async def handler(event: shoal.Event) -> None:
        got.append(event.id)

    subscriber = Subscriber(backbone, APP, "billing", [make_subscription("t", handler)])
    await subscriber.start()
    try:
        await backbone.js.delete_consumer(events_stream(APP), subscriber.consumers[0].name)
        event_id = await Publisher(backbone, APP, "orders").publish("t", {})
        await _eventually(lambda: got == [event_id], timeout=15)
    finally:
        await subscriber.aclose()


async def test_publishing_on_a_closed_connection_fails_at_once(nats_server: EmbeddedNats) -> None:
    bb = await Backbone.connect(nats_server.url)
    await ensure_streams(bb, APP)
    await bb.aclose()
    async with asyncio.timeout(2):
        with pytest.raises(PublishError, match="connection is closed"):
            await Publisher(bb, APP, "orders").publish("t", {})


async def test_no_ack_within_the_timeout_is_a_publish_error(nats_server: EmbeddedNats) -> None:
    bb = await Backbone.connect(nats_server.url)  # no streams: nobody acknowledges
    try:
        with pytest.raises(PublishError, match=r"not acknowledged within 0.5 s"):
            await Publisher(bb, "nostreams", "orders", timeout=0.5).publish("t", {})
    finally:
        await bb.aclose()


def test_a_subscriber_refuses_two_handlers_of_one_topic(backbone: Backbone) -> None:
    async def one(event: shoal.Event) -> None:
        pass

    async def two(event: shoal.Event) -> None:
        pass

    subs = [make_subscription("t", one), make_subscription("t", two)]
    with pytest.raises(EventsError, match="two handlers of topic 't'"):
        Subscriber(backbone, APP, "billing", subs)


async def test_the_overview_reads_the_newest_dead_letters_only_and_counts_them_all(
    backbone: Backbone,
) -> None:
    for n in range(6):
        await backbone.js.publish(
            f"shoal.{APP}.dlq.billing.order.created",
            b"{}",
            headers={"ce-id": f"ev{n}", "ce-type": "order.created", "Nats-Msg-Id": f"ev{n}:b"},
        )
    await backbone.js.delete_msg(dlq_stream(APP), 5)  # ev4 was replayed: a gap
    overview = await events_overview(backbone, APP, recent=3)
    assert overview["dead_letters"]["count"] == 5
    assert [r["id"] for r in overview["dead_letters"]["recent"]] == ["ev5", "ev3", "ev2"]
