"""Events inside ``shoal serve``: the process's publisher, and its consumers once started.

The publisher is installed as soon as the backbone is connected (so ``shoal.publish``
works in the app's startup); the consumers start after the app's startup has run
(every module-level ``@subscribe`` has registered by then) and are drained before
its shutdown, so a handler never runs against resources the app has closed.
"""

from __future__ import annotations

import logging

from shoal.backbone._connection import Backbone
from shoal.events._consumer import StoreSource
from shoal.events._publisher import Publisher
from shoal.events._subscribe import subscriptions
from shoal.events._subscriber import Subscriber
from shoal.runtime._context import set_current_publisher
from shoal.state import StateStore
from shoal.state._current import state

__all__ = ["EventsRuntime"]

log = logging.getLogger("shoal.events")


async def service_state() -> StateStore:
    """The service's own store (``shoal.state()``): where idempotent handlers commit."""
    return state()


class EventsRuntime:
    def __init__(
        self, backbone: Backbone, app: str, service: str, store: StoreSource = service_state
    ) -> None:
        self.publisher = Publisher(backbone, app, service)
        self.subscriber = Subscriber(backbone, app, service, [], store=store)
        self._backbone = backbone
        self._app = app
        self._service = service
        self._store = store
        set_current_publisher(self.publisher)

    async def start(self) -> None:
        """Start a consumer per ``@subscribe`` registration of this process."""
        subs = subscriptions()
        if subs:
            self.subscriber = Subscriber(
                self._backbone, self._app, self._service, subs, store=self._store
            )
            await self.subscriber.start()

    async def drain(self, timeout: float) -> None:
        await self.subscriber.drain(timeout)

    async def aclose(self) -> None:
        set_current_publisher(None)
        await self.subscriber.aclose()
