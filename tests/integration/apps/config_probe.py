"""Answers with its live config (``shoal.config()``) as JSON; for the config integration tests."""

from __future__ import annotations

import json
from typing import Any

import shoal


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                shoal.config()  # loaded before the app's startup
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps(dict(shoal.config())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
