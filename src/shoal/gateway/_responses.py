"""The gateway's own answers: small JSON bodies that say what went wrong and why."""

from __future__ import annotations

import json
from collections.abc import Mapping

from shoal.types import Send

__all__ = ["REASON_HEADER", "send_json"]

REASON_HEADER = b"shoal-reason"


async def send_json(
    send: Send,
    status: int,
    body: Mapping[str, object],
    *,
    reason: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer ``status`` with ``body`` as JSON and ``shoal-reason: <reason>``."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (REASON_HEADER, reason.encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
