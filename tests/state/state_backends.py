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
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis

from shoal.state import StateStore, open_postgres, open_redis, open_sqlite

POSTGRES_DSN = os.environ.get("SHOAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHOAL_TEST_REDIS", "redis://127.0.0.1:6379/0")


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


def unavailable(what: str) -> None:
    """Fail on CI, skip elsewhere: the server a test needs is not there."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure)")
    pytest.skip(what)


async def require_postgres() -> None:
    try:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {POSTGRES_DSN} is not available: {exc}")
    else:
        await conn.close()


async def require_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        unavailable(f"Redis at {REDIS_URL} is not available: {exc}")
    finally:
        await client.aclose()


async def drop_postgres_app(app: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS shoal_state."{app}", shoal_outbox."{app}"')
    finally:
        await conn.close()


async def drop_redis_app(app: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"shoal:{app}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def new_app() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


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
