"""PostgreSQL state (asyncpg): one table per app, ``shoal_state."<app>"``, whose primary
key is (service, key); every query filters by the store's service.

Keys use the "C" collation, so order and prefix ranges are by code point, as on the
other backends. Expiry compares with the store's clock (epoch seconds, injectable;
the clocks of the services' machines, not the server's); expired rows are invisible
at once and deleted by a sweep at most once per ``sweep_interval``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from shoal.exceptions import StateError
from shoal.state._api import StateStore
from shoal.state._backend import OutboxRecord, Write
from shoal.state._codec import check_name, conflict, prefix_end

__all__ = ["PostgresBackend", "open_postgres", "redact_dsn"]

_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_LIVE = "(expires IS NULL OR expires > $3)"


async def open_postgres(
    dsn: str,
    app: str,
    service: str,
    *,
    clock: Callable[[], float] = time.time,
    sweep_interval: float = 60.0,
    max_connections: int = 10,
    connect_timeout: float = 5.0,
) -> StateStore:
    """The state store of ``service`` of ``app`` in the PostgreSQL database at ``dsn``;
    the schema and the app's table are created if missing."""
    backend = PostgresBackend(
        dsn,
        check_name("app", app),
        check_name("service", service),
        clock=clock,
        sweep_interval=sweep_interval,
    )
    await backend.open(max_connections=max_connections, connect_timeout=connect_timeout)
    return StateStore(backend)


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (and without query options)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the configured DSN"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme or 'postgresql'}://{user}{host}:{port}{parts.path}"


class PostgresBackend:
    """:class:`~shoal.state._backend.StateBackend` on one PostgreSQL table per app."""

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        app: str,
        service: str,
        *,
        clock: Callable[[], float],
        sweep_interval: float,
    ) -> None:
        self._dsn = dsn
        self.app = app
        self.service = service
        self.where = f"{redact_dsn(dsn)} (postgres, app {app!r}, service {service!r})"
        self.table = f'shoal_state."{app}"'
        self.outbox_table = f'shoal_outbox."{app}"'
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0
        self._pool: Any = None
        t = self.table
        self._sql_get = (
            f"SELECT key, value, etag FROM {t} "
            f"WHERE service = $1 AND key = ANY($2::text[]) AND {_LIVE}"
        )
        self._sql_upsert = (
            f"INSERT INTO {t} (service, key, value, etag, expires) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value, "
            "etag = EXCLUDED.etag, expires = EXCLUDED.expires"
        )
        self._sql_create = (  # inserted, or over an expired row; a live row stays
            f"INSERT INTO {t} AS s (service, key, value, etag, expires) "
            "VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value, "
            "etag = EXCLUDED.etag, expires = EXCLUDED.expires "
            "WHERE s.expires IS NOT NULL AND s.expires <= $6"
        )
        self._sql_live = f"SELECT 1 FROM {t} WHERE service = $1 AND key = $2 AND {_LIVE}"
        self._sql_update = (
            f"UPDATE {t} SET value = $4, etag = $5, expires = $6 "
            f"WHERE service = $1 AND key = $2 AND {_LIVE} AND etag = $7"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE service = $1 AND key = $2 AND {_LIVE}"

    async def open(self, *, max_connections: int, connect_timeout: float) -> None:
        with self._errors("cannot be reached"):
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=max_connections, timeout=connect_timeout
            )
        try:
            with self._errors("cannot create its tables"):
                async with self._pool.acquire() as conn, conn.transaction():
                    # serialise concurrent first opens: CREATE ... IF NOT EXISTS can race
                    await conn.execute("SELECT pg_advisory_xact_lock(7007001)")
                    await conn.execute(self._schema())
        except BaseException:
            await self.aclose()
            raise

    def _schema(self) -> str:
        return f"""
            CREATE SCHEMA IF NOT EXISTS shoal_state;
            CREATE SCHEMA IF NOT EXISTS shoal_outbox;
            CREATE TABLE IF NOT EXISTS {self.table} (
                service text NOT NULL,
                key text COLLATE "C" NOT NULL,
                value text NOT NULL,
                etag text NOT NULL,
                expires double precision,
                PRIMARY KEY (service, key)
            );
            CREATE TABLE IF NOT EXISTS {self.outbox_table} (
                service text NOT NULL,
                seq bigserial NOT NULL,
                id text NOT NULL,
                payload text NOT NULL,
                PRIMARY KEY (service, id)
            );
        """

    @contextmanager
    def _errors(self, what: str = "failed") -> Iterator[None]:
        try:
            yield
        except _DB_ERRORS as exc:
            detail = str(exc).strip() or type(exc).__name__
            raise StateError(
                f"state store {self.where} {what}: {detail}; check that PostgreSQL is "
                "running there and that the DSN (user, database, password) in the "
                "service's state settings is right"
            ) from exc

    def _pool_or_fail(self) -> Any:
        if self._pool is None:
            raise StateError(f"state store {self.where} is closed; open it again")
        return self._pool

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        pool = self._pool_or_fail()
        with self._errors():
            rows = await pool.fetch(self._sql_get, self.service, list(keys), self._clock())
        return {r[0]: (r[1], r[2]) for r in rows}

    async def list(self, prefix: str, limit: int) -> builtins.list[tuple[str, str]]:
        pool = self._pool_or_fail()
        end = prefix_end(prefix)
        sql = f"SELECT key, value FROM {self.table} WHERE service = $1 AND key >= $2 AND {_LIVE}"
        args: list[object] = [self.service, prefix, self._clock(), limit]
        if end is not None:
            sql += " AND key < $5"
            args.append(end)
        sql += " ORDER BY key LIMIT $4"
        with self._errors():
            rows = await pool.fetch(sql, *args)
        return [(r[0], r[1]) for r in rows]

    async def commit(
        self, writes: Sequence[Write], outbox: Sequence[OutboxRecord] = ()
    ) -> builtins.list[bool]:
        pool, now = self._pool_or_fail(), self._clock()
        with self._errors():
            if len(writes) == 1 and not outbox:  # one statement: atomic by itself
                existed = [await self._apply(pool, writes[0], now)]
            else:
                async with pool.acquire() as conn, conn.transaction():
                    existed = [await self._apply(conn, w, now) for w in writes]
                    if outbox:
                        await conn.executemany(
                            f"INSERT INTO {self.outbox_table} (service, id, payload) "
                            "VALUES ($1, $2, $3)",
                            [(self.service, r.id, r.payload) for r in outbox],
                        )
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            with suppress(*_DB_ERRORS):  # the write is done; a failed sweep waits for the next
                await pool.execute(
                    f"DELETE FROM {self.table} WHERE service = $1 AND expires <= $2",
                    self.service,
                    now,
                )
        return existed

    async def _apply(self, conn: Any, w: Write, now: float) -> bool:
        """Apply one write; whether the key was live (sets: True when unknown)."""
        expires = None if w.ttl is None else now + w.ttl
        if w.absent:
            if w.value is None:  # created and deleted in one transaction: only the check
                created = await conn.fetchval(self._sql_live, self.service, w.key, now) is None
            else:
                status = await conn.execute(
                    self._sql_create, self.service, w.key, w.value, w.new_etag, expires, now
                )
                created = not str(status).endswith(" 0")
            if not created:
                raise conflict(w.key, self.where, absent=True)
            return False
        if w.value is None:
            if w.etag is None:
                status = await conn.execute(self._sql_delete, self.service, w.key, now)
            else:
                status = await conn.execute(
                    self._sql_delete + " AND etag = $4", self.service, w.key, now, w.etag
                )
        elif w.etag is None:
            await conn.execute(self._sql_upsert, self.service, w.key, w.value, w.new_etag, expires)
            return True
        else:
            status = await conn.execute(
                self._sql_update, self.service, w.key, now, w.value, w.new_etag, expires, w.etag
            )
        changed = not str(status).endswith(" 0")
        if w.etag is not None and not changed:
            raise conflict(w.key, self.where)
        return changed

    async def outbox_pending(self, limit: int) -> builtins.list[OutboxRecord]:
        pool = self._pool_or_fail()
        with self._errors():
            rows = await pool.fetch(
                f"SELECT id, payload FROM {self.outbox_table} WHERE service = $1 "
                "ORDER BY seq LIMIT $2",
                self.service,
                limit,
            )
        return [OutboxRecord(r[0], r[1]) for r in rows]

    async def outbox_remove(self, ids: Sequence[str]) -> None:
        pool = self._pool_or_fail()
        with self._errors():
            await pool.execute(
                f"DELETE FROM {self.outbox_table} WHERE service = $1 AND id = ANY($2::text[])",
                self.service,
                list(ids),
            )

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
