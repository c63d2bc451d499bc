"""HTTP/1.1 framing: serialise an ``httpx.Request``, and read a response head's framing.

The head is written exactly as httpx built it (method, raw path, raw headers);
the only header ever added is ``Transfer-Encoding: chunked``, for a request
that has a body but declares neither a length nor a transfer coding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import httpx

__all__ = [
    "Headers",
    "Outgoing",
    "chunk_header",
    "encode_request",
    "has_framing",
    "head_keep_alive",
]

Headers = list[tuple[bytes, bytes]]

# An in-memory body up to this size goes out in the same write as the head.
_COALESCE_LIMIT: Final = 64 * 1024

_METHODS: Final = {m: m.encode("ascii") for m in ("GET", "HEAD", "POST", "PUT", "DELETE")}
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_END_CHUNKED: Final = b"0\r\n\r\n"


class Outgoing:
    """A request ready for the wire.

    ``data`` is written first (the head, plus the whole body when it is small and
    in memory); then each of ``tail``; then ``stream``, when the body is not in
    memory, framed as ``chunked`` says, and checked against ``length``.
    """

    __slots__ = ("chunked", "close", "data", "is_head", "length", "retryable", "stream", "tail")

    def __init__(
        self,
        data: bytes,
        tail: tuple[bytes, ...],
        stream: httpx.AsyncByteStream | None,
        *,
        chunked: bool,
        length: int | None,
        close: bool,
        method: str,
    ) -> None:
        self.data = data
        self.tail = tail
        self.stream = stream
        self.chunked = chunked
        self.length = length
        self.close = close
        self.is_head = method == "HEAD"
        # Safe to send again on another connection: idempotent, and the body can be replayed.
        self.retryable = stream is None and method in _IDEMPOTENT


def encode_request(request: httpx.Request, extra: Sequence[tuple[bytes, bytes]] = ()) -> Outgoing:
    """Build the bytes of ``request``'s head and decide how its body is framed.

    ``extra`` headers (lowercase names) are added, replacing any of the same name."""
    method = request.method
    parts = [
        _METHODS.get(method) or method.encode("ascii"),
        b" ",
        request.url.raw_path,
        b" HTTP/1.1\r\n",
    ]
    length: int | None = None
    chunked = False
    close = False
    replaced = {name for name, _ in extra} if extra else ()
    for name, value in request.headers.raw:
        if replaced and name.lower() in replaced:
            continue
        parts += (name, b": ", value, b"\r\n")
        size = len(name)
        # Compare lengths first so that most headers cost no lower().
        if size == 14 and name.lower() == b"content-length":
            length = _parse_length(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            if not value.lower().rstrip().endswith(b"chunked"):
                raise httpx.LocalProtocolError(
                    f"a request's Transfer-Encoding must end in chunked, not {value!r}"
                )
            chunked = True
        elif size == 10 and name.lower() == b"connection":
            close = b"close" in value.lower()
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("Http11Pool.send needs a request with an async body stream")
    body = _in_memory_body(request, stream)
    if not chunked and length is None and (body is None or body):
        # A body, but no framing declared: chunked is the one that needs no length.
        parts.append(b"Transfer-Encoding: chunked\r\n")
        chunked = True
    parts.append(b"\r\n")
    if body is None:
        return Outgoing(
            b"".join(parts),
            (),
            stream,
            chunked=chunked,
            length=None if chunked else length,
            close=close,
            method=method,
        )
    tail = _frame_body(parts, body, chunked=chunked, length=length)
    return Outgoing(
        b"".join(parts), tail, None, chunked=chunked, length=length, close=close, method=method
    )


def chunk_header(size: int) -> bytes:
    """The size line that opens a chunk of ``size`` bytes."""
    return b"%x\r\n" % size


def _frame_body(
    parts: list[bytes], body: bytes, *, chunked: bool, length: int | None
) -> tuple[bytes, ...]:
    """Append ``body`` (framed) to ``parts`` if small; else return what to write after."""
    if chunked:
        if not body:
            parts.append(_END_CHUNKED)
            return ()
        parts.append(chunk_header(len(body)))
        if len(body) <= _COALESCE_LIMIT:
            parts += (body, b"\r\n", _END_CHUNKED)
            return ()
        return (body, b"\r\n" + _END_CHUNKED)
    if length is not None and length != len(body):
        msg = f"request body is {len(body)} bytes but its Content-Length says {length}"
        raise httpx.LocalProtocolError(msg)
    if len(body) <= _COALESCE_LIMIT:
        parts.append(body)
        return ()
    return (body,)


def _in_memory_body(request: httpx.Request, stream: httpx.AsyncByteStream) -> bytes | None:
    """The whole body when httpx already holds it in memory, else None (stream it)."""
    if isinstance(stream, httpx.ByteStream):
        try:
            return request.content
        except httpx.RequestNotRead:
            return None
    return None


def _parse_length(value: bytes) -> int:
    if not value.strip().isdigit():
        raise httpx.LocalProtocolError(f"invalid Content-Length header: {value!r}")
    return int(value)


def head_keep_alive(version: str, headers: Headers) -> bool:
    """Whether a HEAD response leaves the connection open (llhttp's answer assumes a body)."""
    options: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            options.update(token.strip() for token in value.lower().split(b","))
    if version in ("1.0", "0.9"):
        return b"keep-alive" in options
    return b"close" not in options


def has_framing(headers: Headers) -> bool:
    """Whether the body length is known (else it runs until the server closes)."""
    for name, _ in headers:
        size = len(name)
        if (size == 14 and name.lower() == b"content-length") or (
            size == 17 and name.lower() == b"transfer-encoding"
        ):
            return True
    return False
