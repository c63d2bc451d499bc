"""The machine's PostgreSQL and Redis for tests: where, whether there, and cleaning up.

A server that is not there fails the test when ``CI`` is set, and skips it with the
reason elsewhere. ``SHOAL_TEST_POSTGRES`` and ``SHOAL_TEST_REDIS`` override the addresses.
Plain helpers (no fixtures), importable from any test directory.
"""

from __future__ import annotations

import os
import uuid

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis

__all__ = [
    "POSTGRES_DSN",
    "REDIS_URL",
    "drop_postgres_app",
    "drop_redis_app",
    "new_app",
    "require_postgres",
    "require_redis",
    "unavailable",
]

POSTGRES_DSN = os.environ.get("SHOAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHOAL_TEST_REDIS", "redis://127.0.0.1:6379/0")


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
