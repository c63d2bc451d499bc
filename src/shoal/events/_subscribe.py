"""``@shoal.subscribe``: handlers registered at import time, started by the runtime.

    @shoal.subscribe("orders.created")
    async def on_order(event: shoal.Event) -> None: ...

    @shoal.subscribe("orders.created", idempotent=True)
    async def count(event: shoal.Event, tx: shoal.state.Transaction) -> None:
        tx.set("count", (await tx.get("count") or 0) + 1)

The registry is process-wide: ``shoal serve`` starts one consumer per
registration once the app's startup has run; a plain program starts them
itself (:class:`shoal.events.Subscriber`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from shoal.events._delivery import check_policy
from shoal.events._event import Event
from shoal.events._names import check_topic
from shoal.exceptions import EventsError

__all__ = ["Handler", "Subscription", "clear_subscriptions", "subscribe", "subscriptions"]

Handler = Callable[..., Awaitable[None]]
H = TypeVar("H", bound=Handler)

DEFAULT_BACKOFF = (1.0, 5.0, 30.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    """One handler of one topic, with its delivery policy."""

    topic: str
    handler: Handler
    max_deliveries: int = 5
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    concurrency: int = 16
    ack_wait: float = 30.0
    idempotent: bool = False

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"

    async def call(self, event: Event, tx: Any = None) -> None:
        if self.idempotent:
            await self.handler(event, tx)
        else:
            await self.handler(event)


_registry: dict[str, Subscription] = {}


def make_subscription(
    topic: str,
    handler: Handler,
    *,
    max_deliveries: int = 5,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    concurrency: int = 16,
    ack_wait: float = 30.0,
    idempotent: bool = False,
) -> Subscription:
    """A checked :class:`Subscription` (EventsError for anything unusable)."""
    check_topic(topic)
    delays = check_policy(max_deliveries, backoff)
    where = f"@subscribe({topic!r}) on {getattr(handler, '__qualname__', handler)!r}"
    if not inspect.iscoroutinefunction(handler):
        raise EventsError(f"{where}: the handler must be an `async def` function")
    wanted = 2 if idempotent else 1
    try:
        inspect.signature(handler).bind(*range(wanted))
    except TypeError:
        raise EventsError(
            f"{where}: the handler must take {'(event, tx)' if idempotent else '(event)'}"
            + (" with idempotent=True" if idempotent else "")
        ) from None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise EventsError(f"{where}: concurrency must be an int of at least 1")
    if not isinstance(ack_wait, int | float) or not 0.5 <= ack_wait <= 3600:
        raise EventsError(f"{where}: ack_wait must be between 0.5 and 3600 seconds")
    return Subscription(
        topic, handler, max_deliveries, delays, concurrency, float(ack_wait), bool(idempotent)
    )


def subscribe(
    topic: str,
    *,
    max_deliveries: int = 5,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    concurrency: int = 16,
    ack_wait: float = 30.0,
    idempotent: bool = False,
) -> Callable[[H], H]:
    """Register the decorated ``async def handler(event)`` for ``topic`` in this process.

    Every service subscribing to a topic gets each of its events; the instances of
    one service share them. The handler's return acknowledges the event; an
    exception redelivers it after ``backoff[n-1]`` seconds (the last delay repeats),
    and after ``max_deliveries`` deliveries it goes to the dead-letter stream
    (``shoal events``, ``shoal events replay``). ``ack_wait``: seconds after which an
    unacknowledged delivery (a crashed instance) is redelivered; a running handler
    keeps it alive. ``concurrency``: handlers running at once per instance.
    With ``idempotent=True`` the handler is ``async def handler(event, tx)`` with a
    transaction on the service's state store: its writes and a marker of the event
    are committed together, and a redelivered event already committed is skipped;
    a commit that meets a stale ETag (``ConcurrencyError``) runs the handler again in a
    new transaction, up to 10 times, before it counts as a failed delivery.
    """

    def register(handler: H) -> H:
        sub = make_subscription(
            topic,
            handler,
            max_deliveries=max_deliveries,
            backoff=backoff,
            concurrency=concurrency,
            ack_wait=ack_wait,
            idempotent=idempotent,
        )
        earlier = _registry.get(topic)
        if earlier is not None and earlier.name != sub.name:
            raise EventsError(
                f"topic {topic!r} already has a handler in this service ({earlier.name}); "
                f"{sub.name} would share its events with it, each event reaching only one: "
                "handle the topic in one function"
            )
        _registry[topic] = sub
        return handler

    return register


def subscriptions() -> list[Subscription]:
    """The handlers registered in this process, in registration order."""
    return list(_registry.values())


def clear_subscriptions() -> None:
    """Forget every registration (for tests)."""
    _registry.clear()
