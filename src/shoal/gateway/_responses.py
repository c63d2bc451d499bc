"""The gateway's own answers: small JSON bodies that say what went wrong and why."""

from __future__ import annotations

from collections.abc import Mapping

from shoal._asgi import send_json as _send_json
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
    await _send_json(send, status, body, [(REASON_HEADER, reason.encode()), *(headers or ())])
