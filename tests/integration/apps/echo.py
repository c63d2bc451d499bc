"""A tiny raw ASGI app the integration tests serve under `shoal serve`."""

from __future__ import annotations

import asyncio
import os
from typing import Any

INSTANCE = os.environ.get("SHOAL_INSTANCE", "?")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path.startswith("/slow/"):
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
    payload = body if scope["method"] == "POST" else f"{INSTANCE} {path}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
