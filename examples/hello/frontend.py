"""The frontend service: calls the greeter through the mesh by its service name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

import shoal

http: httpx.AsyncClient


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global http
    async with shoal.client() as client:
        http = client
        yield


app = FastAPI(title="frontend", lifespan=lifespan)


@app.get("/hello/{name}")
async def hello(name: str) -> dict[str, str]:
    response = await http.get(f"http://greeter/greet/{name}")
    response.raise_for_status()
    body: dict[str, str] = response.json()
    return {**body, "via": "frontend"}
