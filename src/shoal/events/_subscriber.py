"""The consumers of one process: start them all, warn of topics nobody publishes, drain.

``shoal serve`` runs one :class:`Subscriber` over the ``@shoal.subscribe``
registrations once the app's startup has run; a plain asyncio program (a
benchmark, a worker script) can run its own over a :class:`Backbone`.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import nats.errors

from shoal.backbone._connection import Backbone
from shoal.events._consumer import EventConsumer, StoreSource
from shoal.events._names import events_stream, events_subjects, subscriber_filter
from shoal.events._streams import ensure_streams
from shoal.events._subscribe import Subscription, subscriptions
from shoal.exceptions import EventsError

if TYPE_CHECKING:
    from shoal.state import StateStore

__all__ = ["Subscriber"]

log = logging.getLogger("shoal.events")


class Subscriber:
    """Runs a consumer per subscription (by default, this process's ``@subscribe`` ones).

    ``store``: the service's state store (or an async function returning it), needed
    by idempotent handlers. After :meth:`start`, ``unpublished`` lists the topics on
    which no event has been published in this app yet (each also logged as a warning).
    """

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        subs: Iterable[Subscription] | None = None,
        *,
        store: StateStore | StoreSource | None = None,
    ) -> None:
        self.backbone = backbone
        self.app = app
        self.service = service
        self._subs = list(subscriptions() if subs is None else subs)
        topics = [sub.topic for sub in self._subs]
        if len(set(topics)) != len(topics):
            twice = sorted({t for t in topics if topics.count(t) > 1})
            raise EventsError(
                f"{service} has two handlers of topic {', '.join(map(repr, twice))}: they would "
                "share one consumer, each event reaching only one; handle a topic in one function"
            )
        self._store = _store_source(store)
        self.consumers: list[EventConsumer] = []
        self.unpublished: list[str] = []

    async def start(self) -> None:
        if not self._subs:
            return
        await ensure_streams(self.backbone, self.app, update=False)
        for sub in self._subs:
            consumer = EventConsumer(self.backbone, self.app, self.service, sub, store=self._store)
            info = await consumer.start()
            self.consumers.append(consumer)
            if not info.num_pending and not info.num_ack_pending and not _delivered(info):
                await self._check_published(sub)
        log.info(
            "%s handles %d topic(s): %s",
            self.service, len(self.consumers), ", ".join(c.sub.topic for c in self.consumers),
        )  # fmt: skip

    async def _check_published(self, sub: Subscription) -> None:
        """Warn (naming the topic, and near names that do exist) if nobody published it."""
        stream = events_stream(self.app)
        try:
            mine = await self.backbone.js.stream_info(
                stream, subjects_filter=subscriber_filter(self.app, sub.topic)
            )
            if mine.state.subjects:
                return
            every = await self.backbone.js.stream_info(
                stream, subjects_filter=events_subjects(self.app)
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("cannot look for publishers of %s: %r", sub.topic, exc)
            return
        topics = sorted({s.split(".", 4)[4] for s in every.state.subjects or {}})
        near = difflib.get_close_matches(sub.topic, topics, n=3)
        self.unpublished.append(sub.topic)
        log.warning(
            "%s subscribes to topic %r (%s), but no service of app %s has published an event on "
            "it yet: the handler runs when one does.%s",
            self.service, sub.topic, sub.name, self.app,
            f" Did you mean {', '.join(repr(t) for t in near)}?" if near else
            " Check the topic's spelling against the publisher's.",
        )  # fmt: skip

    async def drain(self, timeout: float) -> None:
        """Stop pulling; let running handlers finish within ``timeout`` seconds; close."""
        await asyncio.gather(*(c.drain(timeout) for c in self.consumers))

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.consumers))


def _delivered(info: object) -> bool:
    delivered = getattr(info, "delivered", None)
    return bool(delivered and delivered.stream_seq)


def _store_source(
    store: StateStore | Callable[[], Awaitable[StateStore]] | None,
) -> StoreSource | None:
    if store is None:
        return None
    if not callable(store):  # a StateStore
        fixed = store

        async def given() -> StateStore:
            return fixed

        return given
    return store
