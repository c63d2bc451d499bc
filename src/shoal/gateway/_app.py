"""The gateway: the app's one entry point from outside, an ASGI app in front of the mesh.

The supervisor runs it like any service, ``shoal serve shoal.gateway:app`` with
``SHOAL_SERVICE=gateway``; at startup it loads its routes (``SHOAL_GATEWAY_ROUTES``,
else the manifest in ``SHOAL_APP_DIR``) and opens one ``shoal.client()``. Each
request goes to the service of the longest matching prefix, through the mesh.
On a route with ``jwt``, only requests with a valid bearer token go on (401
otherwise), carrying the token's verified claims in ``shoal-user``.
"""

from __future__ import annotations

import http.cookiejar
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import httpx

from shoal.exceptions import ShoalError
from shoal.gateway._config import load_routes
from shoal.gateway._headers import ROUTE_HEADER
from shoal.gateway._jwks import JwksUnavailableError
from shoal.gateway._jwt import JwtRejectedError, JwtVerifier
from shoal.gateway._proxy import proxy
from shoal.gateway._responses import send_json
from shoal.gateway._routes import Match, Route, RouteTable
from shoal.gateway._user import encode_claims
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
    routes: Sequence[RouteSpec],
    *,
    client: httpx.AsyncClient | None = None,
    app_dir: str | os.PathLike[str] | None = None,
) -> ASGIApp:
    """A gateway over ``routes``; it sends through ``client`` (default: its own ``shoal.client()``).

    A client given here stays the caller's to close; one the gateway opens
    itself is closed at lifespan shutdown. A route's JWKS file is found in
    ``app_dir`` (default: ``SHOAL_APP_DIR``, else the working directory).
    """
    return Gateway(routes, client=client, app_dir=app_dir)


class Gateway:
    """The gateway ASGI app. Without ``routes``, it loads them at startup (see ``load_routes``)."""

    def __init__(
        self,
        routes: Sequence[RouteSpec] | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        app_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._specs = None if routes is None else tuple(routes)
        self._table = None if routes is None else RouteTable(routes)
        self._client = client
        self._owns_client = client is None
        self._app_dir = None if app_dir is None else Path(app_dir)
        self._verifiers: dict[str, JwtVerifier] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await _refuse_websocket(receive, send)

    def start(self) -> tuple[RouteTable, httpx.AsyncClient]:
        """Load the routes and their JWKS files and open the client, unless given; idempotent."""
        if self._table is None or self._specs is None:
            specs = load_routes()
            self._table, self._specs = RouteTable(specs), specs
            shown = ", ".join(
                f"{r.prefix} -> {r.service}{' (strip prefix)' if r.strip_prefix else ''}"
                for r in self._table.routes
            )
            log.info("gateway routes: %s", shown or "none")
        if self._verifiers is None:
            self._verifiers = _verifiers(self._specs, self._app_dir)
        if self._client is None:
            jar = httpx.Cookies(_NoCookies())
            self._client = mesh_client(timeout=DEFAULT_TIMEOUT, cookies=jar)
        return self._table, self._client

    async def aclose(self) -> None:
        """Close the client if the gateway opened it, and the clients fetching JWKS URLs."""
        verifiers, self._verifiers = self._verifiers or {}, None
        for verifier in verifiers.values():
            await verifier.aclose()
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
        user: bytes | None = None
        verifier = (self._verifiers or {}).get(match.route.prefix)
        if verifier is not None:
            claims = await _authenticate(verifier, scope, send, match)
            if claims is None:
                return
            user = encode_claims(claims)
        await proxy(client, scope, receive, send, match, user=user)


def _verifiers(specs: Sequence[RouteSpec], app_dir: Path | None) -> dict[str, JwtVerifier]:
    """A verifier for each route with ``jwt``, by prefix (of duplicate prefixes, the first)."""
    directory = app_dir or Path(os.environ.get("SHOAL_APP_DIR") or os.getcwd())
    seen: set[str] = set()
    verifiers: dict[str, JwtVerifier] = {}
    for spec in specs:
        prefix = Route.compile(spec).prefix
        if prefix in seen:
            continue
        seen.add(prefix)
        if spec.jwt is not None:
            verifiers[prefix] = JwtVerifier(spec.jwt, directory, prefix=prefix)
    return verifiers


async def _authenticate(
    verifier: JwtVerifier, scope: Scope, send: Send, match: Match
) -> dict[str, object] | None:
    """The verified claims of the request's token, or ``None`` once it is answered 401/503."""
    route = match.route
    headers = [(ROUTE_HEADER, route.prefix_header)]
    values = [v for n, v in scope["headers"] if n == b"authorization"]
    try:
        if len(values) > 1:
            raise JwtRejectedError("malformed", "more than one Authorization header")
        return await verifier.verify(values[0].decode("latin-1") if values else None)
    except JwtRejectedError as exc:
        challenge = b"Bearer"
        if exc.reason != "missing-token":
            challenge += b' error="invalid_token", error_description="%s"' % _quotable(exc.message)
        headers.append((b"www-authenticate", challenge))
        body = {"error": exc.message, "reason": exc.reason, "route": route.prefix}
        log.info("%s %s: 401 %s: %s", scope["method"], scope["path"], exc.reason, exc.message)
        await send_json(send, 401, body, reason=f"unauthenticated:{exc.reason}", headers=headers)
    except JwksUnavailableError as exc:
        headers.append((b"retry-after", b"5"))
        body = {"error": str(exc), "reason": "jwks-unavailable", "route": route.prefix}
        await send_json(send, 503, body, reason="jwks-unavailable", headers=headers)
    return None


def _quotable(text: str) -> bytes:
    """``text`` fit for a quoted header parameter: printable ASCII, no quote or backslash."""
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text[:200])
    return safe.encode("ascii")


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        reason = "the shoal gateway does not proxy websockets yet"
        await send({"type": "websocket.close", "code": 1011, "reason": reason})
