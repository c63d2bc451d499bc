"""The gateway: the app's one entry point from outside, an ASGI app in front of the mesh.

The supervisor runs it like any service, ``shoal serve shoal.gateway:app`` with
``SHOAL_SERVICE=gateway``; at startup it loads its routes (``SHOAL_GATEWAY_ROUTES``,
else the manifest in ``SHOAL_APP_DIR``) and opens one ``shoal.client()``. Each
request goes to the service of the longest matching prefix, through the mesh.
"""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import Sequence
from urllib.parse import quote

import httpx

from shoal.exceptions import ShoalError
from shoal.gateway._config import load_routes
from shoal.gateway._proxy import proxy
from shoal.gateway._responses import send_json
from shoal.gateway._routes import RouteTable
from shoal.manifest import RouteSpec
from shoal.mesh import client as mesh_client
from shoal.types import ASGIApp, Receive, Scope, Send

__all__ = ["DEFAULT_TIMEOUT", "Gateway", "create_gateway"]

log = logging.getLogger("shoal.gateway")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Of the gateway's own client: 5 s to connect, 60 s for each read and write."""


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: one client serves every user of the gateway."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None


def create_gateway(
    routes: Sequence[RouteSpec], *, client: httpx.AsyncClient | None = None
) -> ASGIApp:
    """A gateway over ``routes``; it sends through ``client`` (default: its own ``shoal.client()``).

    A client given here stays the caller's to close; one the gateway opens
    itself is closed at lifespan shutdown.
    """
    return Gateway(routes, client=client)


class Gateway:
    """The gateway ASGI app. Without ``routes``, it loads them at startup (see ``load_routes``)."""

    def __init__(
        self,
        routes: Sequence[RouteSpec] | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._table = None if routes is None else RouteTable(routes)
        self._client = client
        self._owns_client = client is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await _refuse_websocket(receive, send)

    def start(self) -> tuple[RouteTable, httpx.AsyncClient]:
        """Load the routes and open the client, unless given; idempotent."""
        if self._table is None:
            self._table = RouteTable(load_routes())
            shown = ", ".join(
                f"{r.prefix} -> {r.service}{' (strip prefix)' if r.strip_prefix else ''}"
                for r in self._table.routes
            )
            log.info("gateway routes: %s", shown or "none")
        if self._client is None:
            jar = httpx.Cookies(_NoCookies())
            self._client = mesh_client(timeout=DEFAULT_TIMEOUT, cookies=jar)
        return self._table, self._client

    async def aclose(self) -> None:
        """Close the client if the gateway opened it."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except (ShoalError, ValueError) as exc:
                    failed = f"the gateway cannot start: {exc}"
                    await send({"type": "lifespan.startup.failed", "message": failed})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            table, client = self.start()  # already done at startup, unless lifespan is off
        except (ShoalError, ValueError) as exc:
            log.error("the gateway cannot start: %s", exc)
            body = {"error": f"the gateway cannot start: {exc}"}
            await send_json(send, 500, body, reason="gateway-misconfigured")
            return
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
        match = table.match(raw_path)
        if match is None:
            missing = {"error": f"no route for {scope['path']}", "routes": table.prefixes}
            await send_json(send, 404, missing, reason="no-route")
            return
        await proxy(client, scope, receive, send, match)


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        reason = "the shoal gateway does not proxy websockets yet"
        await send({"type": "websocket.close", "code": 1011, "reason": reason})
