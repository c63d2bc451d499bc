"""A `shoal serve` process keeps its config while the embedded NATS is down (static stability)
and takes changes again once it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from procs import ServeProcess, serve_env

from shoal.backbone import Backbone, EmbeddedNats
from shoal.config._store import ConfigStore
from shoal.exceptions import BackboneError
from shoal.registry import Discovery

pytestmark = pytest.mark.integration


async def _config_of(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        data: dict[str, object] = (await http.get(url)).json()
        return data


async def _until(url: str, key: str, value: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while (await _config_of(url)).get(key) != value:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)


async def test_an_instance_keeps_its_config_while_nats_restarts(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    admin = await Backbone.connect(nats_server.url)
    store = ConfigStore(admin, "itest")
    await store.publish_manifest("cfg", {"page_size": 20})
    env = serve_env(nats_server.url, SHOAL_SERVICE="cfg", SHOAL_INSTANCE="cfg-0")
    proc = ServeProcess(["config_probe:app"], env, tmp_path / "cfg-0.log")
    try:
        await itest_view.wait_for(lambda c: len(c.ready("cfg")) == 1, timeout=30)
        url = f"http://{itest_view.ready('cfg')[0].address}/"
        assert await _config_of(url) == {"page_size": 20}
        await store.set("cfg", {"page_size": 7})
        await _until(url, "page_size", 7)

        nats_server.kill()
        await asyncio.sleep(1.0)
        assert await _config_of(url) == {"page_size": 7}  # the last values, NATS or not

        await nats_server.start()
        await itest_view.wait_for(lambda c: not c.frozen, timeout=10)
        store.forget()
        for _ in range(20):  # the admin connection reconnects on its own schedule
            try:
                await store.set("cfg", {"page_size": 8, "beta": True})
                break
            except BackboneError:
                await asyncio.sleep(0.25)
        await _until(url, "beta", True)
        assert await _config_of(url) == {"page_size": 8, "beta": True}
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
        await admin.aclose()
