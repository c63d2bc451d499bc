"""The building blocks inside one instance: live configuration, events, sagas and state.

``shoal serve`` drives them around the app's life, in this order:

- :meth:`BuildingBlocks.load` before the app's startup: the configuration snapshot
  is in (``shoal.config()`` works in startup handlers) and ``shoal.publish`` works;
- :meth:`BuildingBlocks.start` once the app has started: the outbox relay, a
  consumer per ``@shoal.subscribe`` (every module-level decorator has run), and the
  resumption of unfinished sagas;
- :meth:`BuildingBlocks.drain` before the app's shutdown: handlers finish and the
  outbox is emptied while the app's resources are still open (sagas stop through
  :meth:`wrap`'s hold on the app's lifespan);
- :meth:`BuildingBlocks.aclose` last: watches, consumers and the state store closed.
"""

from __future__ import annotations

from shoal.backbone._connection import Backbone
from shoal.config._api import change_callbacks, set_current_config
from shoal.config._runtime import LiveConfig
from shoal.events._runtime import EventsRuntime
from shoal.runtime._settings import RuntimeSettings
from shoal.saga._resumer import SagaResumer
from shoal.state._current import close_state
from shoal.types import ASGIApp

__all__ = ["BuildingBlocks"]


class BuildingBlocks:
    def __init__(
        self, backbone: Backbone, settings: RuntimeSettings, secret_key: bytes | None
    ) -> None:
        self.config = LiveConfig(
            backbone,
            settings.app,
            settings.service,
            settings.instance,
            secret_key=secret_key,
            callbacks=change_callbacks(),
        )
        self.events = EventsRuntime(backbone, settings.app, settings.service)
        self.sagas = SagaResumer()

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the saga resumer stopped before its lifespan shutdown."""
        return self.sagas.around(app)

    async def load(self) -> None:
        await self.config.start()
        set_current_config(self.config)

    async def start(self) -> None:
        await self.events.start()
        self.sagas.start()

    async def drain(self, timeout: float) -> None:
        await self.events.drain(timeout)

    async def aclose(self) -> None:
        await self.events.aclose()
        set_current_config(None)
        await self.config.aclose()
        await self.sagas.aclose()
        await close_state()
