"""One HTTP/1.1 client connection: an asyncio Protocol that drives httptools.

A connection carries one exchange at a time (no pipelining). It hands itself
back to its pool as soon as the whole response has arrived, even if the reader
has not consumed the body yet: the body stays buffered in the exchange.

Responses to HEAD: llhttp learns that a response has no body only when the
headers-complete callback returns 1, and httptools returns 1 there only for an
upgrade; it offers no way to say "this answers a HEAD" (MagicStack/httptools#47).
Left alone, the parser would wait for the Content-Length bytes a HEAD response
announces but never sends. So for a HEAD the connection ends the exchange itself
when the head is complete, and retires the parser: a fresh parser reads the next
response. Anything the old parser still sees in the same read is a protocol
violation, and closes the connection. 1xx, 204 and 304 need nothing: llhttp
knows they have no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol, cast

import httptools
import httpx

from ._http11_stream import Exchange, wait_future
from ._http11_wire import Headers, Outgoing, chunk_header, has_framing, head_keep_alive

__all__ = ["Connection", "Key", "Owner", "StaleConnectionError"]

Key = tuple[str, int, str]
"""(host, port, the SPIFFE ID the server must prove, or "" for plaintext)."""

NO_RESPONSE = "server closed the connection without sending a response"


class Owner(Protocol):
    """What a connection tells the pool that opened it."""

    def release(self, conn: Connection) -> None:
        """``conn`` finished a response and may carry another request."""

    def unidle(self, conn: Connection) -> None:
        """``conn`` must not be handed out again."""

    def lost(self, conn: Connection) -> None:
        """``conn``'s socket is closed."""


class StaleConnectionError(Exception):
    """A reused connection closed before any byte of the response arrived.

    Most likely the server closed the idle connection just as the request went
    out, and processed nothing: an idempotent request may be sent again.
    """


class _ViolationError(Exception):
    """Raised inside a parser callback; becomes ``httpx.RemoteProtocolError``."""


class Connection(asyncio.Protocol):
    """A TCP connection to one endpoint, and the response parser reading it."""

    __slots__ = (
        "_drain_waiter",
        "_exchange",
        "_got_bytes",
        "_head_request",
        "_headers",
        "_interim",
        "_loop",
        "_owner",
        "_parser",
        "_reading_paused",
        "_reason",
        "_request_close",
        "_retired",
        "_transport",
        "_write_paused",
        "_writing",
        "closed",
        "closing",
        "idle",
        "key",
        "requests",
    )

    def __init__(self, owner: Owner, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.idle = False  # in the pool's idle list
        self.closing = False  # never to be handed out again
        self.requests = 0  # responses completed on this connection
        self.closed: asyncio.Future[None] = loop.create_future()  # done: socket closed
        self._owner = owner
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: Exchange | None = None
        self._got_bytes = False
        self._head_request = False
        self._request_close = False
        self._headers: Headers = []
        self._reason = b""
        self._interim = False
        self._retired = False
        self._reading_paused = False
        self._write_paused = False
        self._writing = False
        self._drain_waiter: asyncio.Future[bool] | None = None

    def usable(self) -> bool:
        transport = self._transport
        return not self.closing and transport is not None and not transport.is_closing()

    def close(self) -> None:
        """Close now, discarding anything unsent; the pool forgets the connection."""
        if not self.closing:
            self.closing = True
            self._owner.unidle(self)
        transport = self._transport
        if transport is not None:
            self._transport = None
            transport.abort()

    def abandon(self, exchange: Exchange) -> None:
        """The caller gave up on ``exchange``: the connection is in an unknown state."""
        if self._exchange is exchange:
            self._exchange = None
            self.close()

    # --- the request --------------------------------------------------------------

    async def roundtrip(
        self,
        request: httpx.Request,
        out: Outgoing,
        read_timeout: float | None,
        write_timeout: float | None,
    ) -> httpx.Response:
        """Send ``request``; return the response once its head is in."""
        transport = self._transport
        if transport is None or self.closing:
            raise StaleConnectionError(NO_RESPONSE)
        ex = Exchange(self, request, read_timeout, self._loop)
        self._exchange = ex
        self._got_bytes = False
        self._head_request = out.is_head
        self._request_close = out.close
        try:
            transport.write(out.data)
            if out.tail or out.stream is not None:
                await self._write_body(transport, out, request, write_timeout)
            while not ex.head_done and ex.error is None:
                if not await ex.wait(read_timeout):
                    raise httpx.ReadTimeout("timed out waiting for the response", request=request)
        except BaseException:
            self.abandon(ex)
            raise
        if not ex.head_done:
            raise ex.error or httpx.RemoteProtocolError(NO_RESPONSE, request=request)
        return httpx.Response(
            ex.status,
            headers=ex.headers,
            stream=ex,
            extensions={"http_version": ex.http_version, "reason_phrase": ex.reason},
            request=request,
        )

    async def _write_body(
        self,
        transport: asyncio.Transport,
        out: Outgoing,
        request: httpx.Request,
        write_timeout: float | None,
    ) -> None:
        self._writing = True
        try:
            for part in out.tail:
                transport.write(part)
            if out.stream is not None:
                await self._write_stream(transport, out, out.stream, request, write_timeout)
            await self._drain(request, write_timeout)
        finally:
            self._writing = False

    async def _drain(self, request: httpx.Request, write_timeout: float | None) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        while self._write_paused and not self.closing:
            self._drain_waiter = fut = self._loop.create_future()
            if not await wait_future(self._loop, fut, write_timeout):
                raise httpx.WriteTimeout("timed out sending the request body", request=request)

    async def _write_stream(
        self,
        transport: asyncio.Transport,
        out: Outgoing,
        stream: httpx.AsyncByteStream,
        request: httpx.Request,
        write_timeout: float | None,
    ) -> None:
        sent = 0
        limit = out.length
        async for chunk in stream:
            if self.closing:
                return  # the server closed or answered early; the response tells which
            if not chunk:
                continue
            sent += len(chunk)
            if limit is not None and sent > limit:
                raise httpx.LocalProtocolError(
                    f"request body is longer than its Content-Length ({limit})", request=request
                )
            if out.chunked:
                transport.writelines((chunk_header(len(chunk)), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._write_paused:
                await self._drain(request, write_timeout)
        if self.closing:
            return
        if out.chunked:
            transport.write(b"0\r\n\r\n")
        elif limit is not None and sent != limit:
            raise httpx.LocalProtocolError(
                f"request body is {sent} bytes but its Content-Length says {limit}",
                request=request,
            )

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._exchange is None:
            self.close()  # bytes no request asked for: the connection is not trustworthy
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._protocol_error("the server switched protocols, which is not supported")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _ViolationError):
                self._protocol_error(str(cause))
            else:
                self._protocol_error(f"malformed HTTP response: {exc}")
        if self._retired:
            self._retired = False
            self._parser = httptools.HttpResponseParser(self)
            self._headers = []
            self._reason = b""

    def eof_received(self) -> bool | None:
        # The server is closing: an EOF-delimited body ends in connection_lost.
        self.closing = True
        self._owner.unidle(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._transport = None
        self._owner.unidle(self)
        self._owner.lost(self)
        ex = self._exchange
        if ex is not None:
            self._exchange = None
            if ex.head_done and ex.until_eof and exc is None:
                ex.finish()
            else:
                error = self._lost_error(ex)
                error.__cause__ = exc
                ex.fail(error)
        self._wake_drain()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    # --- httptools callbacks ------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self._exchange
        if ex is None or ex.head_done:
            raise _ViolationError("the server sent a response no request asked for")
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        self._headers = []
        reason = self._reason
        self._reason = b""
        if status < 200:
            if status == 101:
                raise _ViolationError("the server switched protocols, which is not supported")
            self._interim = True  # 100 Continue and friends: wait for the real response
            return
        version = parser.get_http_version()
        ex.status = status
        ex.reason = reason
        ex.headers = headers
        if version != "1.1":
            ex.http_version = b"HTTP/" + version.encode("ascii")
        ex.head_done = True
        if self._head_request:
            ex.keep_alive = head_keep_alive(version, headers) and not self._request_close
            self._retired = True  # see the module docstring
            self._complete(ex)
            return
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            ex.until_eof = not has_framing(headers)
        ex.keep_alive = keep_alive and not self._request_close
        ex.wake()

    def on_body(self, body: bytes) -> None:
        ex = self._exchange
        if ex is None:
            raise _ViolationError("the server sent more data than the response announced")
        if ex.push(body) and not self._reading_paused:
            self._reading_paused = True
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        ex = self._exchange
        if ex is not None:
            self._complete(ex)
        elif not self._retired:  # a retired parser may finish a HEAD response itself
            raise _ViolationError("the server sent a response no request asked for")

    # --- internals ----------------------------------------------------------------

    def _complete(self, ex: Exchange) -> None:
        self._exchange = None
        self.requests += 1
        ex.finish()
        if self._reading_paused:
            self.resume_reading()
        if ex.keep_alive and not self.closing and not self._writing:
            self._owner.release(self)
        else:
            self.close()

    def _protocol_error(self, message: str) -> None:
        ex = self._exchange
        self._exchange = None
        if ex is not None:
            ex.fail(httpx.RemoteProtocolError(message, request=ex.request))
        self.close()

    def _lost_error(self, ex: Exchange) -> Exception:
        request = ex.request
        if ex.head_done:
            return httpx.ReadError(
                "server disconnected before the end of the response body", request=request
            )
        if self._got_bytes:
            return httpx.RemoteProtocolError(
                "server disconnected while sending the response head", request=request
            )
        if self.requests:
            return StaleConnectionError(NO_RESPONSE)
        return httpx.RemoteProtocolError(NO_RESPONSE, request=request)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(True)
