"""A fast HTTP/1.1 client connection pool for the mesh transport.

``Http11Pool.send(host, port, request)`` writes an ``httpx.Request`` over plain
TCP and returns an ``httpx.Response`` as soon as its head is in, its body
streaming behind it. The wire work is asyncio Protocols and httptools (llhttp):

    _http11.py         the pool: idle connections per endpoint, connect, retry
    _http11_conn.py    one connection: the Protocol, the parser callbacks
    _http11_stream.py  one exchange: waiting for the head, the body stream
    _http11_wire.py    HTTP/1.1 framing: the request head and body, response keep-alive

Errors come out as httpx exceptions, except ``ConnectFailedError``, which tells
the caller that nothing was sent and another endpoint may be tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ._http11_conn import NO_RESPONSE, Connection, Key, StaleConnectionError
from ._http11_wire import encode_request

__all__ = ["ConnectFailedError", "Http11Pool"]


class ConnectFailedError(Exception):
    """Could not open a connection (refused, reset during connect, unreachable, connect timeout).

    Nothing of the request was sent, so the caller may safely try another endpoint.
    """


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to many endpoints, reused last-in first-out."""

    def __init__(self, *, max_idle_per_endpoint: int = 64, connect_timeout: float = 5.0) -> None:
        if max_idle_per_endpoint < 0:
            raise ValueError("max_idle_per_endpoint must be 0 or more")
        self._max_idle = max_idle_per_endpoint
        self._connect_timeout = connect_timeout
        self._idle: dict[Key, list[Connection]] = {}
        self._all: set[Connection] = set()
        self._closed = False

    async def send(
        self,
        host: str,
        port: int,
        request: httpx.Request,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> httpx.Response:
        """Send ``request`` to ``host:port`` (plus ``extra`` headers, lowercase names, which
        replace the request's own of the same name); return once the response head is in.

        Raises ``ConnectFailedError`` when no connection could be opened, and
        httpx exceptions (``ReadTimeout``, ``RemoteProtocolError``, ...) after.
        """
        if self._closed:
            raise RuntimeError("cannot send a request: the HTTP/1.1 pool is closed")
        out = encode_request(request, extra)
        connect_timeout, read_timeout, write_timeout = self._timeouts(request.extensions)
        key = (host, port)
        conn = self._take(key)
        if conn is None:
            conn = await self._connect(key, connect_timeout)
        try:
            return await conn.roundtrip(request, out, read_timeout, write_timeout)
        except StaleConnectionError as exc:
            # The server closed the idle connection as we sent; it processed nothing.
            if not out.retryable:
                raise httpx.RemoteProtocolError(NO_RESPONSE, request=request) from exc.__cause__
        conn = await self._connect(key, connect_timeout)
        try:
            return await conn.roundtrip(request, out, read_timeout, write_timeout)
        except StaleConnectionError as exc:
            raise httpx.RemoteProtocolError(NO_RESPONSE, request=request) from exc.__cause__

    def drop_endpoint(self, host: str, port: int) -> None:
        """Close the idle connections to ``host:port`` (those in use close when done)."""
        for conn in self._idle.pop((host, port), ()):
            conn.idle = False
            conn.close()

    async def aclose(self) -> None:
        """Close every connection, idle or in use, and wait until their sockets are."""
        self._closed = True
        self._idle.clear()
        conns = list(self._all)
        for conn in conns:
            conn.idle = False
            conn.close()
        for conn in conns:
            await conn.closed

    # --- Owner, for the connections -----------------------------------------------

    def release(self, conn: Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if self._closed or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle = True
        idle.append(conn)

    def unidle(self, conn: Connection) -> None:
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(conn.key)
            if idle is not None and conn in idle:
                idle.remove(conn)

    def lost(self, conn: Connection) -> None:
        self._all.discard(conn)

    # --- internals ----------------------------------------------------------------

    def _take(self, key: Key) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, key: Key, connect_timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        host, port = key
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self, key, loop), host, port
                )
        except TimeoutError as exc:
            msg = f"timed out connecting to {host}:{port} after {connect_timeout}s"
            raise ConnectFailedError(msg) from exc
        except OSError as exc:
            msg = f"cannot connect to {host}:{port}: {exc.strerror or exc}"
            raise ConnectFailedError(msg) from exc
        if not conn.closed.done():
            self._all.add(conn)
        if self._closed:
            conn.close()
            raise RuntimeError("cannot send a request: the HTTP/1.1 pool is closed")
        return conn

    def _timeouts(
        self, extensions: Mapping[str, Any]
    ) -> tuple[float | None, float | None, float | None]:
        """(connect, read, write) from httpx's ``timeout`` request extension."""
        timeout = extensions.get("timeout")
        if timeout is None:
            return self._connect_timeout, None, None
        return (
            timeout.get("connect", self._connect_timeout),
            timeout.get("read"),
            timeout.get("write"),
        )
