"""The outbox across a real crash: a `shoal serve` process SIGKILLed after committing an
order and its event, before relaying it; its restart sends the event, once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from procs import APPS, ServeProcess, serve_env

from shoal.backbone import Backbone, EmbeddedNats
from shoal.backbone._server import free_port
from shoal.events import ensure_streams
from shoal.events._names import events_stream
from shoal.state import open_sqlite

pytestmark = pytest.mark.integration

APP = "outbox"


async def wait_ready(port: int, proc: ServeProcess, timeout: float = 30.0) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            assert proc.proc.poll() is None, proc.output()
            try:
                if (await http.get(f"http://127.0.0.1:{port}/.shoal/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def event_ids(bb: Backbone) -> list[str]:
    info = await bb.js.stream_info(events_stream(APP))
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await bb.js.get_msg(events_stream(APP), seq)
        assert msg.headers is not None
        ids.append(msg.headers["ce-id"])
    return ids


async def until_stored(bb: Backbone, ids: list[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await event_ids(bb) != ids:  # noqa: ASYNC110 - polling NATS, not an event
            await asyncio.sleep(0.02)


async def pending(app_dir: Path) -> list[str]:
    store = await open_sqlite(app_dir, "orders")
    try:
        return [r.id for r in await store.backend.outbox_pending(10)]
    finally:
        await store.aclose()


def test_an_event_committed_before_a_crash_is_sent_after_the_restart_once(
    tmp_path: Path,
) -> None:
    shutil.copy(APPS / "outbox_app.py", tmp_path / "outbox_app.py")
    nats = EmbeddedNats(tmp_path / "nats")
    procs: list[ServeProcess] = []

    def serve(n: int, port: int) -> ServeProcess:
        env = serve_env(nats.url, app=APP, SHOAL_SERVICE="orders", SHOAL_INSTANCE="orders-1",
                        SHOAL_APP_DIR=str(tmp_path), SHOAL_PORT=str(port))  # fmt: skip
        proc = ServeProcess(["outbox_app:app"], env, tmp_path / f"orders-{n}.log", cwd=tmp_path)
        procs.append(proc)
        return proc

    async def scenario() -> None:
        await nats.start()
        bb = await Backbone.connect(nats.url)
        try:
            await ensure_streams(bb, APP)
            port = free_port()
            first = serve(1, port)
            await wait_ready(port, first)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                sent = (await http.post("/place/1")).json()["id"]  # the relay sends at once
                await until_stored(bb, [sent], 5)
                with pytest.raises(httpx.TransportError):
                    await http.post("/place/2", params={"crash": 1})
            assert first.proc.wait(timeout=10) == -9
            (kept,) = await pending(tmp_path)  # committed with the order, never sent
            assert await event_ids(bb) == [sent]

            second = serve(2, port)
            await wait_ready(port, second)
            await until_stored(bb, [sent, kept], 10)
            await asyncio.sleep(0.5)  # nothing more comes
            assert await event_ids(bb) == [sent, kept]
            assert await pending(tmp_path) == []
        finally:
            await bb.aclose()

    try:
        asyncio.run(scenario())
    finally:
        for proc in procs:
            proc.stop()
        asyncio.run(nats.stop())
