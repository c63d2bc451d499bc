"""What is particular to each state backend: files, tables, keys, and unreachable servers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis

from shoal.state import StateError, Write, open_postgres, open_redis, open_sqlite
from shoal.state import _sqlite as sqlite_module
from shoal.state._codec import prefix_end

if TYPE_CHECKING:
    from state_backends import Backend, FakeClock

pytest_plugins = ["state_backends"]


async def test_sqlite_keeps_one_owner_only_wal_file_per_service(tmp_path: Path) -> None:
    async with await open_sqlite(tmp_path, "orders") as orders:
        await orders.set("k", 1)
    async with await open_sqlite(tmp_path, "billing") as billing:
        await billing.set("k", 2)
    state = tmp_path / ".shoal" / "state"
    assert sorted(p.name for p in state.glob("*.db")) == ["billing.db", "orders.db"]
    assert stat.S_IMODE((state / "orders.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    db = sqlite3.connect(state / "orders.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT key, value FROM state").fetchall() == [("k", "1")]
    finally:
        db.close()


async def test_sqlite_writers_in_two_connections_see_each_other(tmp_path: Path) -> None:
    one, two = await open_sqlite(tmp_path, "svc"), await open_sqlite(tmp_path, "svc")
    try:

        async def writes(store_no: int) -> None:
            store = one if store_no == 1 else two
            for i in range(50):
                async with store.transaction() as tx:
                    tx.set(f"{store_no}:{i}", i)
                    tx.set("last", store_no)

        await asyncio.gather(writes(1), writes(2))
        assert len(await one.list(limit=1000)) == 101
        assert len(await two.list("2:")) == 50
    finally:
        await one.aclose()
        await two.aclose()


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    async with await open_sqlite(tmp_path, "svc") as store:
        etag = await store.set("k", 0)
        other = sqlite3.connect(tmp_path / ".shoal" / "state" / "svc.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def release() -> None:
            await asyncio.sleep(0.3)
            other.execute("COMMIT")

        ticker, releaser = asyncio.create_task(tick()), asyncio.create_task(release())
        try:
            assert await store.get("k") == 0  # WAL readers do not wait for the writer
            await store.set("k", 1, etag=etag)
            async with store.transaction() as tx:
                tx.set("k", 2)
                tx.set("j", 2)
        finally:
            ticker.cancel()
            await releaser
            other.close()
        assert ticks >= 10  # the loop kept running while the write waited
        assert await store.get_many(["k", "j"]) == {"k": 2, "j": 2}


async def test_sqlite_commits_on_the_patient_connection_right_after_a_checkpoint(
    tmp_path: Path,
) -> None:
    async with await open_sqlite(tmp_path, "svc") as store:
        await store.set("k", 0)
        backend = store.backend
        assert isinstance(backend, sqlite_module.SqliteBackend)
        patient = backend._patient
        assert patient is not None
        backend._background("PRAGMA wal_checkpoint(PASSIVE)")
        writes = [Write("k", "1", None, "e1"), Write("j", "1", None, "e2")]
        committed = asyncio.get_running_loop().run_in_executor(
            backend._thread, lambda: backend._commit(patient, writes, [])
        )
        # The loop is held, as a busy one can be: the checkpoint's result (its cursor) is
        # not released before the commit runs on the same connection. Once failed with
        # "cannot commit transaction - SQL statements in progress".
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop is the point
        assert await committed == [True, True]
        assert await store.get_many(["k", "j"]) == {"k": 1, "j": 1}


async def test_sqlite_sweep_deletes_expired_rows(tmp_path: Path, fake_clock: FakeClock) -> None:
    clock = fake_clock
    async with await open_sqlite(tmp_path, "svc", clock=clock, sweep_interval=10) as store:
        await store.set("short", 1, ttl=1)
        clock.now += 20
        await store.set("other", 2)  # a write past the sweep interval sweeps
    db = sqlite3.connect(tmp_path / ".shoal" / "state" / "svc.db")
    try:
        assert db.execute("SELECT key FROM state").fetchall() == [("other",)]
    finally:
        db.close()


@pytest.mark.parametrize("service", ["../etc", "Orders", "", "a/b", "-x"])
async def test_sqlite_refuses_a_service_name_that_is_not_a_dns_label(
    tmp_path: Path, service: str
) -> None:
    with pytest.raises(StateError, match="DNS label"):
        await open_sqlite(tmp_path, service)
    assert not (tmp_path / ".shoal").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
async def test_sqlite_in_an_unwritable_directory_raises_state_error(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(StateError, match=r"cannot be created.*writable"):
            await open_sqlite(tmp_path, "svc")
    finally:
        os.chmod(tmp_path, 0o700)


async def test_sqlite_on_a_corrupt_file_raises_state_error(tmp_path: Path) -> None:
    path = tmp_path / ".shoal" / "state" / "svc.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"svc\.db \(sqlite\).*corrupt"):
        await open_sqlite(tmp_path, "svc")


async def test_postgres_keeps_one_table_per_app_keyed_by_service(
    postgres_backend: Backend,
) -> None:
    a, b = await postgres_backend.open("alpha"), await postgres_backend.open("beta")
    await a.set("k", 1)
    await b.set("k", 2)
    conn = await asyncpg.connect(postgres_backend.address)
    try:
        rows = await conn.fetch(
            f'SELECT service, key, value FROM shoal_state."{postgres_backend.app}" ORDER BY 1'
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("alpha", "k", "1"), ("beta", "k", "2")]


async def test_postgres_unreachable_raises_state_error_without_password() -> None:
    with pytest.raises(StateError) as caught:
        await open_postgres("postgresql://bob:s3cret@127.0.0.1:1/db", "app", "svc")
    message = str(caught.value)
    assert "postgresql://bob@127.0.0.1:1/db (postgres" in message
    assert "cannot be reached" in message
    assert "check that PostgreSQL is running" in message
    assert "s3cret" not in message


async def test_postgres_wrong_database_raises_state_error(postgres_backend: Backend) -> None:
    dsn = postgres_backend.address.rsplit("/", 1)[0] + "/no_such_database_shoal"
    with pytest.raises(StateError, match=r"no_such_database_shoal.*does not exist"):
        await open_postgres(dsn, postgres_backend.app, "svc")


async def test_redis_keys_live_under_the_app_and_service_prefix(redis_backend: Backend) -> None:
    store = await redis_backend.open("orders")
    await store.set("k*1", 1, ttl=30)
    client = aioredis.Redis.from_url(redis_backend.address, decode_responses=True)
    try:
        keys = sorted(await client.keys(f"shoal:{redis_backend.app}:*"))
        ttl = await client.pttl(f"shoal:{redis_backend.app}:orders:k:k*1")
    finally:
        await client.aclose()
    assert keys == [
        f"shoal:{redis_backend.app}:orders:@index",
        f"shoal:{redis_backend.app}:orders:k:k*1",
    ]
    assert 0 < ttl <= 30_000


async def test_redis_list_drops_expired_keys_from_the_index(redis_backend: Backend) -> None:
    store = await redis_backend.open("svc")
    for i in range(5):
        await store.set(f"gone:{i}", i, ttl=0.05)
    await store.set("kept", 1)
    await asyncio.sleep(0.2)
    assert await store.list(limit=1) == [("kept", 1)]
    client = aioredis.Redis.from_url(redis_backend.address, decode_responses=True)
    try:
        members = await client.zrange(f"shoal:{redis_backend.app}:svc:@index", 0, -1)
    finally:
        await client.aclose()
    assert members == ["kept"]


async def test_redis_unreachable_raises_state_error_without_password() -> None:
    with pytest.raises(StateError) as caught:
        await open_redis("redis://:s3cret@127.0.0.1:1/0", "app", "svc", connect_timeout=1)
    message = str(caught.value)
    assert "redis://127.0.0.1:1/0 (redis" in message
    assert "check that Redis is running" in message
    assert "s3cret" not in message


def test_prefix_end_is_the_least_string_above_the_prefix() -> None:
    assert prefix_end("") is None
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"
