"""Durable events on NATS JetStream: CloudEvents 1.0, at least once, dead letters.

    @shoal.subscribe("orders.created")
    async def on_created(event: shoal.Event) -> None: ...

    event_id = await shoal.publish("orders.created", {"order": 42}, key="42")

Every subscribing service gets every event on its topics; the instances of one
service share them (one durable consumer per service and topic). A handler
exception redelivers the event after a backoff; after ``max_deliveries`` it is
a dead letter (``shoal events``, ``shoal events replay``). With
``idempotent=True`` a handler's state writes happen once in effect.

Outside ``shoal serve`` (scripts, tests, benchmarks): :class:`Publisher` and
:class:`Subscriber` over a :class:`shoal.backbone.Backbone`.
"""

from __future__ import annotations

from shoal.events._api import publish as publish
from shoal.events._consumer import EventConsumer as EventConsumer
from shoal.events._event import Event as Event
from shoal.events._names import check_topic as check_topic
from shoal.events._names import consumer_name as consumer_name
from shoal.events._publisher import Publisher as Publisher
from shoal.events._streams import ensure_streams as ensure_streams
from shoal.events._subscribe import Subscription as Subscription
from shoal.events._subscribe import clear_subscriptions as clear_subscriptions
from shoal.events._subscribe import make_subscription as make_subscription
from shoal.events._subscribe import subscribe as subscribe
from shoal.events._subscribe import subscriptions as subscriptions
from shoal.events._subscriber import Subscriber as Subscriber
from shoal.events._wire import EncodedEvent as EncodedEvent
from shoal.exceptions import EventsError as EventsError
from shoal.exceptions import PublishError as PublishError

__all__ = [
    "EncodedEvent",
    "Event",
    "EventConsumer",
    "EventsError",
    "PublishError",
    "Publisher",
    "Subscriber",
    "Subscription",
    "check_topic",
    "clear_subscriptions",
    "consumer_name",
    "ensure_streams",
    "make_subscription",
    "publish",
    "subscribe",
    "subscriptions",
]
