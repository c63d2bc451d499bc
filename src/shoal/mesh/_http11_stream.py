"""One request/response exchange; once the head is in, it is the response body stream.

The connection pushes body chunks into the exchange as they arrive; the reader
takes them out. Nothing here touches the socket: the exchange asks its
connection to pause or resume reading, or to close when the reader gives up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

import httpx

if TYPE_CHECKING:
    from ._http11_conn import Connection

__all__ = ["Exchange", "wait_future"]

# Pause reading the socket above HIGH_WATER bytes of unread body; resume at LOW_WATER.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


async def wait_future(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[bool], seconds: float | None
) -> bool:
    """Await ``fut``, which is woken with True; False if ``seconds`` pass first."""
    if seconds is None:
        return await fut
    timer = loop.call_later(seconds, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


class Exchange(httpx.AsyncByteStream):
    """A request in flight on ``conn``, and the body of its response."""

    __slots__ = (
        "buffered",
        "chunks",
        "conn",
        "done",
        "error",
        "head_done",
        "headers",
        "http_version",
        "keep_alive",
        "loop",
        "read_timeout",
        "reason",
        "request",
        "status",
        "until_eof",
        "waiter",
    )

    def __init__(
        self,
        conn: Connection,
        request: httpx.Request,
        read_timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # The connection, while it still has something to deliver to this exchange.
        self.conn: Connection | None = conn
        self.request = request
        self.read_timeout = read_timeout
        self.loop = loop
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[bool] | None = None
        self.error: Exception | None = None
        self.head_done = False
        self.done = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = b"HTTP/1.1"
        self.keep_alive = True
        self.until_eof = False  # the body ends when the server closes the connection

    # --- called by the connection -------------------------------------------------

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def push(self, data: bytes) -> bool:
        """Buffer a body chunk; True when the connection should pause reading."""
        self.chunks.append(data)
        self.buffered += len(data)
        if self.waiter is not None:
            self.wake()
        return self.buffered > HIGH_WATER

    def finish(self) -> None:
        self.done = True
        self.conn = None
        self.wake()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.conn = None
        self.wake()

    async def wait(self, seconds: float | None) -> bool:
        """Wait until the connection wakes this exchange; False if ``seconds`` pass first."""
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.waiter = fut
        return await wait_future(self.loop, fut, seconds)

    # --- the response body stream -------------------------------------------------

    def __aiter__(self) -> Exchange:
        return self

    async def __anext__(self) -> bytes:
        chunks = self.chunks
        while not chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                raise StopAsyncIteration
            if not await self.wait(self.read_timeout):
                error = httpx.ReadTimeout(
                    "timed out reading the response body", request=self.request
                )
                self._abandon(error)
                raise error
        chunk = chunks.popleft()
        self.buffered -= len(chunk)
        conn = self.conn
        if conn is not None and self.buffered <= LOW_WATER:
            conn.resume_reading()
        return chunk

    async def aclose(self) -> None:
        if not self.done and self.error is None:
            self._abandon(httpx.StreamClosed())
        self.chunks.clear()
        self.buffered = 0

    def _abandon(self, error: Exception) -> None:
        """Stop before the end of the body: the connection cannot be reused."""
        conn = self.conn
        self.conn = None
        self.error = error
        if conn is not None:
            conn.abandon(self)
