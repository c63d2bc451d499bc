"""The greeter service: answers greetings."""

from __future__ import annotations

import os

from fastapi import FastAPI

app = FastAPI(title="greeter")


@app.get("/greet/{name}")
async def greet(name: str) -> dict[str, str]:
    return {"greeting": f"Hello, {name}!", "from": os.environ.get("SHOAL_INSTANCE", "?")}
