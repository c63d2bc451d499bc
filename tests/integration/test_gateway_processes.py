"""`shoal serve shoal.gateway:app` as a real process, in front of a real echo service."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from procs import ServeProcess, serve_env, serving

from shoal.backbone import EmbeddedNats
from shoal.registry import Discovery

pytestmark = pytest.mark.integration

ROUTES = [
    {"prefix": "/echo", "service": "echo", "strip_prefix": True},
    {"prefix": "/ghost", "service": "ghost", "strip_prefix": False},
]


def gateway_env(nats_url: str, **extra: str) -> dict[str, str]:
    # SHOAL_PORT=0: a free port, never the manifest's fixed one.
    return serve_env(
        nats_url, SHOAL_SERVICE="gateway", SHOAL_INSTANCE="gateway-0", SHOAL_PORT="0", **extra
    )


async def test_the_gateway_process_routes_through_the_mesh_and_explains_failures(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    env = gateway_env(nats_server.url, SHOAL_GATEWAY_ROUTES=json.dumps(ROUTES))
    with serving(1, nats_server.url, tmp_path):
        gateway = ServeProcess(["shoal.gateway:app"], env, tmp_path / "gateway.log")
        try:
            await itest_view.wait_for(
                lambda c: len(c.ready("echo")) == 1 and len(c.ready("gateway")) == 1, timeout=30
            )
            address = itest_view.ready("gateway")[0].address
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
                hello = await http.get("/echo/hello")
                posted = await http.post("/echo/orders", content=b"one order, please")
                ghost = await http.get("/ghost/x")
                nowhere = await http.get("/nowhere")
            assert (hello.status_code, hello.text) == (200, "echo-0 /hello")
            assert hello.headers["shoal-route"] == "/echo"
            assert hello.headers.get_list("shoal-instance")[0] == "echo-0"
            assert posted.text == "one order, please"
            assert (ghost.status_code, ghost.headers["shoal-reason"]) == (503, "no-endpoints")
            assert ghost.json()["service"] == "ghost"
            assert (nowhere.status_code, nowhere.headers["shoal-reason"]) == (404, "no-route")
            assert gateway.terminate() == 0, gateway.output()
        finally:
            gateway.stop()


async def test_a_gateway_without_routes_exits_saying_why(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    env = gateway_env(nats_server.url, SHOAL_APP_DIR=str(tmp_path))  # no shoal.yaml there
    gateway = ServeProcess(["shoal.gateway:app"], env, tmp_path / "gateway.log", cwd=tmp_path)
    try:
        code = await asyncio.to_thread(gateway.proc.wait, 30)
        assert code != 0
        assert "the gateway cannot start" in gateway.output()
        assert "Traceback" not in gateway.output()
    finally:
        gateway.stop()
