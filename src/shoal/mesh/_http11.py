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

A request sent with ``identity`` (a SPIFFE ID) goes over mutual TLS: the pool
presents this process's SVID (from ``tls``, by default the serving runtime's
workload identity) and refuses a server that does not prove ``identity``.
Connections are pooled per (host, port, identity).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from shoal.exceptions import SvidRejectedError
from shoal.runtime._context import current_identity

from ._http11_conn import NO_RESPONSE, Connection, Key, StaleConnectionError
from ._http11_wire import encode_request
from ._tls import describe_handshake_error, handshake_reason, peer_of_connection

__all__ = ["CONNECT_SECONDS", "ClientTls", "ConnectFailedError", "Http11Pool"]

CONNECT_SECONDS = "shoal.connect_seconds"
"""Response extension: seconds spent opening a new connection (and its TLS handshake) for it."""


class ConnectFailedError(Exception):
    """Could not open a connection (refused, reset during connect, unreachable, connect timeout,
    a failed TLS handshake, a server that is not who it should be).

    Nothing of the request was sent, so the caller may safely try another endpoint.
    ``reason`` is a word for logs (``refused`` unless TLS said more).
    """

    def __init__(self, message: str, *, reason: str = "connect-failed") -> None:
        super().__init__(message)
        self.reason = reason


class ClientTls(Protocol):
    """What the pool needs of a workload identity to open mTLS connections."""

    @property
    def trust_domain(self) -> str: ...

    def client_context(self) -> ssl.SSLContext: ...


def _current_identity() -> ClientTls | None:
    return current_identity()


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to many endpoints, reused last-in first-out."""

    def __init__(
        self,
        *,
        max_idle_per_endpoint: int = 64,
        connect_timeout: float = 5.0,
        tls: Callable[[], ClientTls | None] | None = None,
    ) -> None:
        if max_idle_per_endpoint < 0:
            raise ValueError("max_idle_per_endpoint must be 0 or more")
        self._tls = tls or _current_identity
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
        *,
        identity: str = "",
    ) -> httpx.Response:
        """Send ``request`` to ``host:port`` (plus ``extra`` headers, lowercase names, which
        replace the request's own of the same name); return once the response head is in.
        With ``identity``, over mTLS to a server that proves that SPIFFE ID.

        Raises ``ConnectFailedError`` when no connection could be opened, and
        httpx exceptions (``ReadTimeout``, ``RemoteProtocolError``, ...) after.
        """
        if self._closed:
            raise RuntimeError("cannot send a request: the HTTP/1.1 pool is closed")
        out = encode_request(request, extra)
        connect_timeout, read_timeout, write_timeout = self._timeouts(request.extensions)
        key = (host, port, identity)
        conn = self._take(key)
        connecting = 0.0
        if conn is None:
            conn, connecting = await self._timed_connect(key, connect_timeout)
        try:
            response = await conn.roundtrip(request, out, read_timeout, write_timeout)
        except StaleConnectionError as exc:
            # The server closed the idle connection as we sent; it processed nothing.
            if not out.retryable:
                raise httpx.RemoteProtocolError(NO_RESPONSE, request=request) from exc.__cause__
            conn, connecting = await self._timed_connect(key, connect_timeout)
            try:
                response = await conn.roundtrip(request, out, read_timeout, write_timeout)
            except StaleConnectionError as exc:
                raise httpx.RemoteProtocolError(NO_RESPONSE, request=request) from exc.__cause__
        if connecting:
            response.extensions[CONNECT_SECONDS] = connecting
        return response

    def drop_endpoint(self, host: str, port: int) -> None:
        """Close the idle connections to ``host:port`` (those in use close when done)."""
        for key in [k for k in self._idle if k[0] == host and k[1] == port]:
            for conn in self._idle.pop(key, ()):
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

    async def _timed_connect(
        self, key: Key, connect_timeout: float | None
    ) -> tuple[Connection, float]:
        began = time.perf_counter()
        conn = await self._connect(key, connect_timeout)
        return conn, time.perf_counter() - began

    async def _connect(self, key: Key, connect_timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        host, port, identity = key
        tls = self._client_tls(key) if identity else None
        try:
            async with asyncio.timeout(connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: Connection(self, key, loop),
                    host,
                    port,
                    ssl=None if tls is None else tls.client_context(),
                )
        except TimeoutError as exc:
            msg = f"timed out connecting to {host}:{port} after {connect_timeout}s"
            raise ConnectFailedError(msg) from exc
        except ssl.SSLError as exc:
            raise ConnectFailedError(
                f"TLS handshake with {host}:{port} failed: {describe_handshake_error(exc)}",
                reason=handshake_reason(exc),
            ) from exc
        except OSError as exc:
            msg = f"cannot connect to {host}:{port}: {exc.strerror or exc or type(exc).__name__}"
            raise ConnectFailedError(msg) from exc
        if tls is not None:
            self._check_server(conn, transport, key, tls.trust_domain)
        if not conn.closed.done():
            self._all.add(conn)
        if self._closed:
            conn.close()
            raise RuntimeError("cannot send a request: the HTTP/1.1 pool is closed")
        return conn

    def _client_tls(self, key: Key) -> ClientTls:
        tls = self._tls()
        if tls is None:
            host, port, identity = key
            raise ConnectFailedError(
                f"{host}:{port} serves mTLS as {identity} and this process has no workload "
                "identity: call it from inside `shoal serve`, or through the gateway",
                reason="no-identity",
            )
        return tls

    def _check_server(
        self, conn: Connection, transport: asyncio.BaseTransport, key: Key, domain: str
    ) -> None:
        host, port, identity = key
        try:
            peer = peer_of_connection(transport.get_extra_info("ssl_object"), domain)
        except SvidRejectedError as exc:
            conn.close()
            raise ConnectFailedError(
                f"{host}:{port} is not a valid SVID holder: {exc}", reason=exc.reason
            ) from exc
        if peer.spiffe_id != identity:
            conn.close()
            raise ConnectFailedError(
                f"{host}:{port} proved {peer.spiffe_id}, not {identity}: "
                "refusing to send it a request meant for another service",
                reason="identity-mismatch",
            )

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
