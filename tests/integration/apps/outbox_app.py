"""Places orders with the transactional outbox; ``?crash=1`` SIGKILLs the process right
after the commit, before the relay can send (the outbox integration test)."""

from __future__ import annotations

import os
import signal

from fastapi import FastAPI

import shoal

app = FastAPI()


@app.post("/place/{order}")
async def place(order: int, crash: int = 0) -> dict[str, str]:
    async with shoal.state().transaction() as tx:
        tx.set(f"order:{order}", "placed")
        event_id = tx.publish("orders.placed", {"order": order})
    if crash:  # no await since the commit: the relay task has not run
        os.kill(os.getpid(), signal.SIGKILL)
    return {"id": event_id}
