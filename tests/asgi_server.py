"""Run an ASGI app with uvicorn inside the test's event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` until the block ends; yields the port."""
    # proto=IPPROTO_TCP, or asyncio does not set TCP_NODELAY on accepted sockets.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    config = uvicorn.Config(
        app, host=HOST, http="httptools", ws="none", lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.005)
        else:
            raise RuntimeError("uvicorn did not start within 5 s")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()
