"""The sidecar's ASGI app: wait for the program, then forward every request to it."""

from __future__ import annotations

import asyncio
import logging
import os

import httpx

from shoal._net import accepts
from shoal.exceptions import ServeError
from shoal.gateway._proxy import proxy
from shoal.gateway._routes import Match, Route
from shoal.gateway._user import USER_HEADER
from shoal.manifest import RouteSpec
from shoal.mesh._http11 import ConnectFailedError, Http11Pool
from shoal.types import Receive, Scope, Send

__all__ = ["PORT_ENV", "Sidecar", "app"]

PORT_ENV = "SHOAL_SIDECAR_PORT"
_USER = USER_HEADER.encode()

log = logging.getLogger("shoal.sidecar")


class _Local(httpx.AsyncBaseTransport):
    """Every request to the program on ``host:port``, plaintext over loopback."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.pool = Http11Pool(tls=lambda: None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.pool.send(self.host, self.port, request)
        except ConnectFailedError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        await self.pool.aclose()


class Sidecar:
    """Forwards to the program on ``host:port``, as mesh service ``service``."""

    def __init__(self, port: int, service: str, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.service = service
        self._route = Route.compile(RouteSpec(prefix="/", service=service))
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = self._client
        if client is None:
            client = self._client = self._new_client()
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        user = next((v for k, v in scope["headers"] if k == _USER), None)
        await proxy(client, scope, receive, send, Match(self._route, path), user=user)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=_Local(self.host, self.port), timeout=None)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._wait_for_program()
                self._client = self._new_client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _wait_for_program(self) -> None:
        """Until the program accepts connections: the sidecar is not ready before it is."""
        waited = 0
        while not await accepts(self.host, self.port):
            waited += 1
            if waited % 100 == 0:
                log.info("still waiting for the program on %s:%d", self.host, self.port)
            await asyncio.sleep(0.1)
        log.info("the program answers on %s:%d", self.host, self.port)


def _from_env() -> Sidecar:
    text = os.environ.get(PORT_ENV, "")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ServeError(
            f"{PORT_ENV} must be the port of the program to forward to, got {text!r} "
            "(shoal up sets it for command services)"
        )
    return Sidecar(int(text), os.environ.get("SHOAL_SERVICE", "service"))


class _Lazy:
    """``shoal.sidecar:app``: built from the environment when first called."""

    def __init__(self) -> None:
        self._app: Sidecar | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = _from_env()
        await self._app(scope, receive, send)


app = _Lazy()
