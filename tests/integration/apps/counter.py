"""A service that counts in ``shoal.state()``: the integration tests of state wiring."""

from __future__ import annotations

from fastapi import FastAPI

import shoal

app = FastAPI()


@app.post("/incr/{key}")
async def incr(key: str) -> dict[str, object]:
    store = shoal.state()
    while True:
        try:
            async with store.transaction() as tx:
                item = await tx.get_item(key)
                value = (item.value if item else 0) + 1
                if item is None:  # the first increment: only if no replica made it
                    tx.set(key, value, absent=True)
                else:
                    tx.set(key, value, etag=item.etag)
        except shoal.ConcurrencyError:
            continue  # another replica wrote first: read again
        return {"key": key, "value": value, "backend": store.backend.name}


@app.get("/get/{key}")
async def get(key: str) -> dict[str, object]:
    return {"key": key, "value": await shoal.state().get(key)}
