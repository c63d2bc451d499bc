"""What the state store costs over its raw driver: set and get operations per second.

For each backend (SQLite, PostgreSQL, Redis), one coroutine does one operation after
another on 1,000 keys with a small JSON value: `shoal` through StateStore.set/get,
`raw` the driver doing the same single-row upsert/select in the same run (sqlite3 on
a WAL file with synchronous=NORMAL in the event loop's thread; asyncpg on a pool;
redis-py HSET/HMGET). The two alternate in ROUNDS rounds of SECONDS each; each figure
is the median round. A backend whose server is not there is skipped with the reason.

    python bench/state.py [--seconds 0.5] [--rounds 3] [--postgres DSN] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis.asyncio as aioredis
import uvloop
from _machine import cpu_steal, source_state

from shoal.state import StateStore, open_postgres, open_redis, open_sqlite

Op = Callable[[int], Awaitable[Any]]
KEYS = 1000
VALUE = {"status": "paid", "total": 42.5, "items": [1, 2, 3]}


async def rate(op: Op, seconds: float) -> float:
    """Operations per second of ``op`` called one after another for ``seconds``."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            await op(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


async def compare(
    name: str, ops: dict[str, tuple[Op, Op]], seconds: float, rounds: int
) -> list[str]:
    """RESULT lines for each op: shoal vs raw, alternating rounds, medians."""
    lines = []
    for op_name, (shoal_op, raw_op) in ops.items():
        await rate(shoal_op, 0.1)  # warm up both (prepared statements, script cache)
        await rate(raw_op, 0.1)
        ours, raw = [], []
        for _ in range(rounds):
            ours.append(await rate(shoal_op, seconds))
            raw.append(await rate(raw_op, seconds))
        a, b = statistics.median(ours), statistics.median(raw)
        lines.append(
            f"RESULT state_{name}_{op_name} {a:.0f} ops/s baseline={b:.0f} ratio={a / b:.3f}"
        )
    return lines


def store_ops(store: StateStore) -> tuple[Op, Op]:
    async def set_(i: int) -> None:
        await store.set(f"key:{i % KEYS}", VALUE)

    async def get(i: int) -> None:
        await store.get(f"key:{i % KEYS}")

    return set_, get


async def bench_sqlite(seconds: float, rounds: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_sqlite(tmp, "bench")
        db = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(
            "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, etag TEXT NOT NULL,"
            " expires REAL) WITHOUT ROWID"
        )

        async def raw_set(i: int) -> None:
            db.execute(
                "INSERT INTO state (key, value, etag, expires) VALUES (?, ?, ?, NULL) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, etag = excluded.etag",
                (f"key:{i % KEYS}", json.dumps(VALUE), str(i)),
            )

        async def raw_get(i: int) -> None:
            row = db.execute(
                "SELECT value, etag FROM state WHERE key = ?", (f"key:{i % KEYS}",)
            ).fetchone()
            json.loads(row[0])

        try:
            s_set, s_get = store_ops(store)
            return await compare(
                "sqlite", {"set": (s_set, raw_set), "get": (s_get, raw_get)}, seconds, rounds
            )
        finally:
            await store.aclose()
            db.close()


async def bench_postgres(dsn: str, seconds: float, rounds: int) -> list[str]:
    app = f"bench{uuid.uuid4().hex[:8]}"
    store = await open_postgres(dsn, app, "bench")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    table = f'"shoal_bench_{app}"'
    await pool.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, value text NOT NULL, etag text NOT NULL)"
    )

    async def raw_set(i: int) -> None:
        await pool.execute(
            f"INSERT INTO {table} (key, value, etag) VALUES ($1, $2, $3) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, etag = EXCLUDED.etag",
            f"key:{i % KEYS}",
            json.dumps(VALUE),
            str(i),
        )

    async def raw_get(i: int) -> None:
        row = await pool.fetchrow(
            f"SELECT value, etag FROM {table} WHERE key = $1", f"key:{i % KEYS}"
        )
        json.loads(row[0])

    try:
        s_set, s_get = store_ops(store)
        return await compare(
            "postgres", {"set": (s_set, raw_set), "get": (s_get, raw_get)}, seconds, rounds
        )
    finally:
        await store.aclose()
        await pool.execute(
            f'DROP TABLE IF EXISTS {table}, shoal_state."{app}", shoal_outbox."{app}"'
        )
        await pool.close()


async def bench_redis(url: str, seconds: float, rounds: int) -> list[str]:
    app = f"bench{uuid.uuid4().hex[:8]}"
    store = await open_redis(url, app, "bench")
    client = aioredis.Redis.from_url(url, decode_responses=True)

    async def raw_set(i: int) -> None:
        await client.hset(
            f"bench:{app}:key:{i % KEYS}", mapping={"v": json.dumps(VALUE), "e": str(i)}
        )

    async def raw_get(i: int) -> None:
        value, _ = await client.hmget(f"bench:{app}:key:{i % KEYS}", "v", "e")
        json.loads(value or "null")

    try:
        s_set, s_get = store_ops(store)
        return await compare(
            "redis", {"set": (s_set, raw_set), "get": (s_get, raw_get)}, seconds, rounds
        )
    finally:
        await store.aclose()
        for pattern in (f"bench:{app}:*", f"shoal:{app}:*"):
            keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(keys), 500):
                await client.delete(*keys[i : i + 500])
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    steal = cpu_steal()
    lines = await bench_sqlite(args.seconds, args.rounds)
    runs: list[tuple[str, Awaitable[list[str]]]] = [
        ("postgres", bench_postgres(args.postgres, args.seconds, args.rounds)),
        ("redis", bench_redis(args.redis, args.seconds, args.rounds)),
    ]
    for name, run in runs:
        try:
            lines += await run
        except Exception as exc:  # a missing server skips its backend, with the reason
            print(f"skipped {name}: {exc}")
    stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
    print(f"cpu steal during the run: {100 * stolen / max(total, 1):.1f}%")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
