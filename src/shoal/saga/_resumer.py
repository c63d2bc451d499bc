"""Under ``shoal serve``: resume the unfinished runs of every registered saga once the
app has started, then sweep again every lease for runs a stopped instance left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from shoal.saga._registry import registered
from shoal.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from shoal.saga._saga import Saga

__all__ = ["SagaResumer"]

log = logging.getLogger("shoal.saga")

DEFAULT_INTERVAL = 15.0


class SagaResumer:
    """The background task that resumes sagas in one instance; does nothing (and opens
    no state store) while no saga is registered."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="shoal-saga-resume")

    def around(self, app: ASGIApp) -> ASGIApp:
        """``app``, whose lifespan shutdown first stops resuming: a resumed step must be
        cancelled (its run then resumes elsewhere), not fail on the app's closed clients
        and be compensated."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def on_receive() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    await self.aclose()
                return message

            await app(scope, on_receive, send)

        return wrapped

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            sagas = registered()
            await asyncio.gather(*(self._resume(s) for s in sagas))
            await asyncio.sleep(min((s.lease for s in sagas), default=DEFAULT_INTERVAL))

    @staticmethod
    async def _resume(saga: Saga) -> None:
        try:
            await saga.resume()  # the driver logs how each resumed run ends
        except Exception:
            log.exception(
                "saga %s: resuming its unfinished runs failed; trying again later", saga.name
            )
