"""@subscribe: what a handler must look like, and the process-wide registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import shoal
from shoal.events import clear_subscriptions, subscriptions
from shoal.exceptions import EventsError


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    clear_subscriptions()
    yield
    clear_subscriptions()


def test_a_decorated_handler_is_registered_with_its_policy() -> None:
    @shoal.subscribe("order.created", max_deliveries=3, backoff=(0.1,), concurrency=4)
    async def on_created(event: shoal.Event) -> None:
        pass

    (sub,) = subscriptions()
    assert sub.topic == "order.created"
    assert sub.handler is on_created
    assert (sub.max_deliveries, sub.backoff, sub.concurrency) == (3, (0.1,), 4)
    assert sub.name.endswith("on_created")


def test_handlers_must_be_async_and_take_the_right_arguments() -> None:
    with pytest.raises(EventsError, match="async def"):
        shoal.subscribe("t")(lambda event: None)  # type: ignore[type-var]

    async def one(event: shoal.Event) -> None:
        pass

    with pytest.raises(EventsError, match=r"\(event, tx\)"):
        shoal.subscribe("t", idempotent=True)(one)
    with pytest.raises(EventsError, match="dot-separated"):
        shoal.subscribe("t.*")(one)
    with pytest.raises(EventsError, match="concurrency"):
        shoal.subscribe("t", concurrency=0)(one)
    assert subscriptions() == []


def test_two_handlers_of_one_topic_are_refused() -> None:
    async def first(event: shoal.Event) -> None:
        pass

    async def second(event: shoal.Event) -> None:
        pass

    shoal.subscribe("t")(first)
    shoal.subscribe("t")(first)  # the same function again (a re-import): fine
    with pytest.raises(EventsError, match="already has a handler"):
        shoal.subscribe("t")(second)


async def test_publish_outside_a_service_says_what_to_do() -> None:
    with pytest.raises(EventsError, match=r"shoal serve.*Publisher"):
        await shoal.publish("t", {})
