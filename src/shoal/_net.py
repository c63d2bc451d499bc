"""Small socket helpers shared by the supervisor and the sidecar."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["accepts"]


async def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on ``host:port`` (which is then closed)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
