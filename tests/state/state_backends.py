"""Fixtures for the state tests: one per backend, for the contract suite and the backend tests.

Each test module loads it with ``pytest_plugins = ["state_backends"]`` (a conftest.py
here would clash, for mypy, with tests/conftest.py, and a package tests/state with
bench/state.py), and imports its names for annotations only.

PostgreSQL and Redis are the machine's local servers (``SHOAL_TEST_POSTGRES``,
``SHOAL_TEST_REDIS`` override the addresses). A server that is not there fails the
test when ``CI`` is set, and skips it with the reason elsewhere. Each test uses an
app name of its own and drops what it created.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servers import (
    POSTGRES_DSN,
    REDIS_URL,
    drop_postgres_app,
    drop_redis_app,
    new_app,
    require_postgres,
    require_redis,
)
from shoal.state import StateStore, open_postgres, open_redis, open_sqlite


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """A way to open stores of one app on one backend, and to let time pass for TTLs."""

    name: str
    app: str
    address: str
    opener: Callable[[str], Awaitable[StateStore]]
    advance: Callable[[float], Awaitable[None]]
    stores: list[StateStore] = field(default_factory=list)

    async def open(self, service: str = "svc") -> StateStore:
        store = await self.opener(service)
        self.stores.append(store)
        return store


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    backend = Backend(
        "sqlite",
        "app",
        str(tmp_path),
        lambda service: open_sqlite(tmp_path, service, clock=clock),
        advance,
    )
    yield backend
    for store in backend.stores:
        await store.aclose()


@pytest.fixture
async def postgres_backend() -> AsyncIterator[Backend]:
    await require_postgres()
    clock, app = FakeClock(), new_app()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    backend = Backend(
        "postgres",
        app,
        POSTGRES_DSN,
        lambda service: open_postgres(POSTGRES_DSN, app, service, clock=clock, max_connections=4),
        advance,
    )
    try:
        yield backend
    finally:
        for store in backend.stores:
            await store.aclose()
        await drop_postgres_app(app)


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    await require_redis()
    app = new_app()
    backend = Backend(
        "redis", app, REDIS_URL, lambda service: open_redis(REDIS_URL, app, service), asyncio.sleep
    )
    try:
        yield backend
    finally:
        for store in backend.stores:
            await store.aclose()
        await drop_redis_app(app)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    fixture: Backend = request.getfixturevalue(f"{request.param}_backend")
    return fixture


@pytest.fixture
async def store(backend: Backend) -> StateStore:
    return await backend.open("svc")
