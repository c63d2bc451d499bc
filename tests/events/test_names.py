"""Topic rules and the names events live under."""

from __future__ import annotations

import itertools
import re

import pytest

from shoal.events._names import (
    check_topic,
    consumer_name,
    event_subject,
    seen_key,
    subscriber_filter,
    topic_of_subject,
)
from shoal.exceptions import EventsError

_NATS_NAME = re.compile(r"[^.*>\s/\\]{1,255}")


@pytest.mark.parametrize(
    "topic", ["orders", "orders.created", "a-b_c.D9", "x" * 128, "a.b.c.d.e.f"]
)
def test_valid_topics_pass(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic",
    ["", "orders.", ".orders", "a..b", "orders.*", "orders.>", "has space", "ü", "x" * 129, 7],
)
def test_invalid_topics_are_refused_with_the_rule(topic: object) -> None:
    with pytest.raises(EventsError, match=r"dot-separated tokens|topics are str"):
        check_topic(topic)


def test_subjects_put_the_publisher_before_the_topic() -> None:
    assert (
        event_subject("shop", "orders", "order.created") == "shoal.shop.events.orders.order.created"
    )
    assert subscriber_filter("shop", "order.created") == "shoal.shop.events.*.order.created"
    assert topic_of_subject("shoal.shop.events.orders.order.created") == ("orders", "order.created")


def test_consumer_names_are_nats_legal_and_injective() -> None:
    services = ["a", "a-b", "ab", "b"]
    topics = ["x", "x.y", "x_y", "x_dy", "x_uy", "x-y", "_d", "_u", ".", "d", "u", "x.y.z"]
    topics = [t for t in topics if _valid(t)]
    names: dict[str, tuple[str, str]] = {}
    for service, topic in itertools.product(services, topics):
        name = consumer_name(service, topic)
        assert _NATS_NAME.fullmatch(name), name
        assert names.setdefault(name, (service, topic)) == (service, topic), name
    assert consumer_name("orders", "order.created") == "orders_order_dcreated"


def test_long_topics_get_a_bounded_digest_name() -> None:
    long_a, long_b = "a" * 127 + "b", "a" * 127 + "c"
    assert consumer_name("svc", long_a) != consumer_name("svc", long_b)
    assert len(consumer_name("x" * 63, "_." * 63 + "ab")) <= 255
    assert consumer_name("svc", "_." * 63 + "ab").startswith("svc__h")


def test_seen_keys_name_the_consumer_and_the_event() -> None:
    assert seen_key("orders_x", "abc") == "_shoal/events/seen/orders_x/abc"


def _valid(topic: str) -> bool:
    try:
        check_topic(topic)
    except EventsError:
        return False
    return True
