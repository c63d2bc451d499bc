"""Bodies the mesh may hold: small answers read whole, request bodies it may send again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

__all__ = ["BUFFER_LIMIT", "Whole", "buffered", "replayable_size", "small_body"]

BUFFER_LIMIT = 64 * 1024
"""Small, length-delimited answers are read whole before they are returned, so an
instance dying mid-answer sends a repeatable call elsewhere instead of failing it."""


def small_body(response: httpx.Response) -> bool:
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT


def replayable_size(request: httpx.Request) -> int | None:
    """The size of a request body held in memory (0 for none); None for a streamed one."""
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    length = request.headers.get("content-length", "0")
    return int(length) if length.isdigit() else None


class Whole(httpx.AsyncByteStream):
    """A body already read in full, still served as a stream (aiter_raw works on it)."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.content:
            yield self.content


async def buffered(response: httpx.Response) -> httpx.Response:
    """``response`` with its body read whole (the connection goes back to the pool)."""
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    try:
        content = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    return httpx.Response(
        response.status_code,
        headers=response.headers.raw,
        stream=Whole(content),
        extensions=response.extensions,
        request=response.request,
    )
