"""Small ASGI helpers shared by shoal's own apps (admin paths, control API, gateway)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from shoal.types import Receive, Send

__all__ = ["read_body", "send_json"]


async def send_json(
    send: Send, status: int, body: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``status`` with ``body`` as JSON, plus ``headers``."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body
