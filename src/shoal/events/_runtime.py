"""Events inside ``shoal serve``: the process's publisher, and its consumers once started.

The publisher is installed as soon as the backbone is connected (so ``shoal.publish``
works in the app's startup); the consumers start after the app's startup has run
(every module-level ``@subscribe`` has registered by then) and are drained before
its shutdown, so a handler never runs against resources the app has closed.
"""

from __future__ import annotations

import asyncio
import logging

from shoal.backbone._connection import Backbone
from shoal.events._consumer import StoreSource
from shoal.events._outbox import OutboxRelay
from shoal.events._publisher import Publisher
from shoal.events._subscribe import subscriptions
from shoal.events._subscriber import Subscriber
from shoal.exceptions import ShoalError, StateError
from shoal.runtime._context import set_current_publisher
from shoal.state import StateStore
from shoal.state._current import StateTarget, state, state_opened

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
        self.relay = OutboxRelay(store, self.publisher, should_poll=state_opened)
        self._relay_task: asyncio.Task[None] | None = None
        set_current_publisher(self.publisher)

    async def start(self) -> None:
        """Start the outbox relay, and a consumer per ``@subscribe`` registration."""
        self._start_relay()
        subs = subscriptions()
        if subs:
            self.subscriber = Subscriber(
                self._backbone, self._app, self._service, subs, store=self._store
            )
            await self.subscriber.start()

    def _start_relay(self) -> None:
        """Relay ``tx.publish`` events of the service's store: at once if it may hold
        some (a crash left them), then on every commit that stages events."""
        try:
            target = StateTarget.from_env()
            store = state()
        except StateError:  # not run as a service (no SHOAL_SERVICE): no store to relay
            return
        store.on_outbox = self.relay.wake
        self._relay_task = asyncio.create_task(
            self.relay.run(at_once=target.may_hold_data()), name="shoal-outbox-relay"
        )

    async def drain(self, timeout: float) -> None:
        """Let handlers finish, then send what they (and requests) left in the outbox."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.subscriber.drain(timeout)
        if self._relay_task is not None and state_opened():
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    await self.relay.relay_once()
            except (TimeoutError, ShoalError) as exc:
                log.warning("outbox not emptied before stopping (%r): the next start sends it", exc)

    async def aclose(self) -> None:
        set_current_publisher(None)
        if self._relay_task is not None:
            self._relay_task.cancel()
            await asyncio.gather(self._relay_task, return_exceptions=True)
        await self.subscriber.aclose()
