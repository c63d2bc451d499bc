"""The runtime's saga resumer: it resumes registered sagas' unfinished runs, and the app's
lifespan shutdown stops it first, so that no resumed step fails on the app's closed
clients (it is cancelled, and resumed elsewhere)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import shoal
from shoal.saga import SagaContext, Step
from shoal.saga._registry import unregister
from shoal.saga._resumer import SagaResumer
from shoal.state import StateStore, open_sqlite
from shoal.types import Message, Receive, Scope, Send

NAME = "test-resume"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with await open_sqlite(tmp_path, "orders") as opened:
        yield opened
    unregister(NAME)


async def test_the_app_shutdown_stops_resuming_before_the_app_hears_of_it(
    store: StateStore,
) -> None:
    now = [1_800_000_000.0]
    events: list[str] = []
    started = asyncio.Event()

    async def slow(ctx: SagaContext) -> None:
        events.append(f"{ctx.step} started")
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append(f"{ctx.step} cancelled")
            raise

    async def quick(ctx: SagaContext) -> str:
        return "done"

    first = shoal.Saga(NAME, [Step("one", quick), Step("two", slow)], store=store, owner="a")
    crashed = asyncio.create_task(first.run("r-1"))
    await started.wait()
    crashed.cancel()  # as if killed: the run stays stored, owned by "a"
    with pytest.raises(asyncio.CancelledError):
        await crashed
    events.clear()
    started.clear()
    unregister(NAME)
    shoal.Saga(  # this process's definition, registered; a's lease has run out
        NAME,
        [Step("one", quick), Step("two", slow)],
        store=store,
        owner="b",
        clock=lambda: now[0] + 3600,
    )

    resumer = SagaResumer()
    inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        resumer.start()  # (shoal serve starts it once the startup is complete)
        assert (await receive())["type"] == "lifespan.shutdown"
        events.append("app shutdown")

    await inbox.put({"type": "lifespan.startup"})

    async def lifespan_of_the_app() -> None:
        await resumer.around(app)({"type": "lifespan"}, inbox.get, inbox.put)

    lifespan = asyncio.create_task(lifespan_of_the_app())
    await asyncio.wait_for(started.wait(), 10)  # the run was resumed: step two again
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert events == ["two started", "two cancelled", "app shutdown"]
    await resumer.aclose()


async def test_http_requests_pass_through_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def nothing() -> Message:
        return {}

    async def drop(message: Message) -> None:
        pass

    await SagaResumer().around(app)({"type": "http"}, nothing, drop)
    assert seen == [{"type": "http"}]
