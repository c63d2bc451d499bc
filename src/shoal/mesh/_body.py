"""Bodies the mesh may hold: small answers read whole, request bodies it may send again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from shoal.mesh._http11_stream import Exchange

__all__ = ["BUFFER_LIMIT", "Whole", "buffered", "raw_header", "replayable_size", "small_body"]

BUFFER_LIMIT = 64 * 1024
"""Small, length-delimited answers are read whole before they are returned, so an
instance dying mid-answer sends a repeatable call elsewhere instead of failing it."""


def raw_header(response: httpx.Response, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase), read from the raw list: httpx's
    ``Headers.get`` decodes every header on each lookup, which shows on the hot path."""
    stream = response.stream
    raw = stream.headers if isinstance(stream, Exchange) else response.headers.raw
    size = len(name)
    for key, value in raw:
        if len(key) == size and key.lower() == name:
            return value
    return None


def small_body(response: httpx.Response) -> bool:
    length = raw_header(response, b"content-length")
    return length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT


def replayable_size(request: httpx.Request) -> int | None:
    """The size of a request body held in memory (0 for none); None for a streamed one."""
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    return len(request.content)  # httpx reads a ByteStream body when the request is built


class Whole(httpx.AsyncByteStream):
    """A body already read in full, still served as a stream (aiter_raw works on it)."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.content:
            yield self.content


async def buffered(response: httpx.Response) -> httpx.Response:
    """``response`` with its body read whole (the connection goes back to the pool).

    The same response object, its stream swapped: building a new ``httpx.Response``
    would parse its headers again, which costs more than the rest of the mesh's work."""
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("buffered() needs a response with an async body stream")
    try:
        content = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    response.stream = Whole(content)
    return response
