"""Subscribers for the events integration tests, run under `shoal serve`.

``SHOAL_SERVICE`` picks the behaviour: ``exact`` counts each event once in its state
(idempotent helper), ``plain`` appends each delivery's number to a file (at least
once), ``flaky`` fails every delivery until ``EVENTS_FIXED`` names an existing file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import shoal
from shoal.state import Transaction

SERVICE = os.environ.get("SHOAL_SERVICE", "")
INSTANCE = os.environ.get("SHOAL_INSTANCE", "?")
OUT = Path(os.environ.get("EVENTS_OUT", "."))
TOPIC = os.environ.get("EVENTS_TOPIC", "chaos.tick")

if SERVICE == "exact":

    @shoal.subscribe(TOPIC, idempotent=True, ack_wait=2.0, backoff=(0.05, 0.2))
    async def count_once(event: shoal.Event, tx: Transaction) -> None:
        await asyncio.sleep(0.001)  # a handler that takes a moment: kills catch some running
        tx.set(f"seen:{event.data['n']}", event.id)
        key = f"count:{INSTANCE}"
        item = await tx.get_item(key)
        if item is None:  # the first: created create-only, as a sibling task may race
            tx.set(key, 1, absent=True)
        else:
            tx.set(key, item.value + 1, etag=item.etag)

elif SERVICE == "plain":
    _fd = os.open(
        OUT / f"plain-{INSTANCE}-{os.getpid()}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND
    )

    @shoal.subscribe(TOPIC, ack_wait=2.0, backoff=(0.05, 0.2))
    async def record(event: shoal.Event) -> None:
        await asyncio.sleep(0.001)
        os.write(_fd, f"{event.data['n']}\n".encode())

elif SERVICE == "flaky":

    @shoal.subscribe(TOPIC, max_deliveries=3, backoff=(0.1, 0.2))
    async def flaky(event: shoal.Event) -> None:
        if not (OUT / "fixed").exists():
            raise RuntimeError(f"cannot handle {event.data}")
        (OUT / f"handled-{event.id}").write_text(str(event.delivery))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/publish":  # publish as this service (the permission test)
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
        try:
            event_id = await shoal.publish(query.get("topic", "x.y"), {"from": SERVICE})
            status, body = 200, event_id.encode()
        except shoal.EventsError as exc:
            status, body = 500, f"{type(exc).__name__}: {exc}".encode()
    else:
        status, body = 200, b"ok"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
