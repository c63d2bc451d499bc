"""SQLite state: one WAL-mode file per service, ``DIR/.shoal/state/<service>.db``.

The file is owner-only (0600). A store holds two connections to it:

- a *fast* one used on the event loop's thread with ``busy_timeout = 0``: in WAL mode
  reads never wait for writers, and a write that finds the file unlocked is a few
  appends to the WAL (``synchronous = NORMAL``: no fsync per commit; durable across a
  crash of the process, not of the machine);
- a *patient* one used on a worker thread with ``busy_timeout`` (5 s): an operation
  that finds another process holding the lock is rolled back on the fast connection
  and retried there, so the loop never blocks waiting for a lock. WAL checkpoints
  (which fsync) also run there, never on the loop.

Expiry compares with the store's clock (epoch seconds, injectable); expired rows are
invisible at once and deleted by a sweep at most once per ``sweep_interval``.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from shoal.exceptions import StateError
from shoal.state._api import StateStore
from shoal.state._backend import OutboxRecord, Write
from shoal.state._codec import check_name, conflict, prefix_end

__all__ = ["SqliteBackend", "open_sqlite", "state_file"]

T = TypeVar("T")
Db = sqlite3.Connection
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY = 200  # fast-path commits between two background WAL checkpoints
_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, etag TEXT NOT NULL, expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_expires ON state (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL
);
"""
_LIVE = "(expires IS NULL OR expires > ?)"


async def open_sqlite(
    directory: str | os.PathLike[str],
    service: str,
    *,
    clock: Callable[[], float] = time.time,
    sweep_interval: float = 60.0,
) -> StateStore:
    """The state store of ``service`` in the app at ``directory`` (which holds shoal.yaml):
    the file ``directory/.shoal/state/<service>.db``, created if missing."""
    path = state_file(directory, service)
    backend = SqliteBackend(path, clock=clock, sweep_interval=sweep_interval)
    await backend.open()
    return StateStore(backend)


def state_file(directory: str | os.PathLike[str], service: str) -> Path:
    """Where ``service``'s SQLite state lives in the app at ``directory``."""
    return Path(directory) / ".shoal" / "state" / f"{check_name('service', service)}.db"


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (
        "locked" in str(exc)
    )


class SqliteBackend:
    """:class:`~shoal.state._backend.StateBackend` on one SQLite file."""

    name = "sqlite"

    def __init__(self, path: Path, *, clock: Callable[[], float], sweep_interval: float) -> None:
        self.path = path
        self.where = f"{path} (sqlite)"
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0
        self._fast: Db | None = None
        self._patient: Db | None = None
        self._closed = False
        self._commits = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shoal-state-sqlite")

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateError(
                f"state store {self.where} cannot be created: {exc.strerror}; "
                "check that the directory is writable"
            ) from exc
        with self._errors():
            self._patient = self._connect(BUSY_TIMEOUT_MS)
            self._patient.executescript(_SCHEMA)
            self._fast = self._connect(0)
            self._fast.execute("PRAGMA wal_autocheckpoint = 0")

    def _connect(self, busy_timeout_ms: int) -> Db:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            advice = (
                f"another process held the lock longer than {BUSY_TIMEOUT_MS} ms; retry"
                if "locked" in str(exc)
                else "check the file is writable and not corrupt (delete it to start afresh)"
            )
            raise StateError(f"state store {self.where} failed: {exc}; {advice}") from exc

    async def _call(self, fn: Callable[[Db], T]) -> T:
        """``fn`` on the fast connection; on a busy file, again on the patient one."""
        if self._fast is None or self._patient is None:
            raise StateError(f"state store {self.where} is closed; open it again")
        fast, patient = self._fast, self._patient
        with self._errors():
            try:
                return fn(fast)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                if fast.in_transaction:
                    fast.execute("ROLLBACK")
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, lambda: fn(patient)
            )

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        return await self._call(lambda db: self._get(db, keys))

    def _get(self, db: Db, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        now, found = self._clock(), {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, value, etag FROM state WHERE key IN ({marks}) AND {_LIVE}",
                (*chunk, now),
            )
            found.update({k: (v, e) for k, v, e in rows})
        return found

    async def list(self, prefix: str, limit: int) -> builtins.list[tuple[str, str]]:
        end = prefix_end(prefix)
        sql = "SELECT key, value FROM state WHERE key >= ?"
        args: list[object] = [prefix]
        if end is not None:
            sql += " AND key < ?"
            args.append(end)
        sql += f" AND {_LIVE} ORDER BY key LIMIT ?"
        return await self._call(lambda db: list(db.execute(sql, (*args, self._clock(), limit))))

    async def commit(
        self, writes: Sequence[Write], outbox: Sequence[OutboxRecord] = ()
    ) -> builtins.list[bool]:
        existed = await self._call(lambda db: self._commit(db, writes, outbox))
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            self._background("DELETE FROM state WHERE expires <= ?", (now,))
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            self._background("PRAGMA wal_checkpoint(PASSIVE)")
        return existed

    def _commit(
        self, db: Db, writes: Sequence[Write], outbox: Sequence[OutboxRecord]
    ) -> builtins.list[bool]:
        now = self._clock()
        if len(writes) == 1 and not outbox:  # one statement: atomic by itself
            existed = [self._apply(db, writes[0], now)]
        else:
            db.execute("BEGIN IMMEDIATE")
            try:
                existed = [self._apply(db, w, now) for w in writes]
                db.executemany(
                    "INSERT INTO outbox (id, payload) VALUES (?, ?)",
                    [(r.id, r.payload) for r in outbox],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return existed

    def _apply(self, db: Db, w: Write, now: float) -> bool:
        """Apply one write; whether the key was live (sets: True when unknown)."""
        expires = None if w.ttl is None else now + w.ttl
        if w.absent:
            if w.value is None:  # created and deleted in one transaction: only the check
                live = db.execute(f"SELECT 1 FROM state WHERE key = ? AND {_LIVE}", (w.key, now))
                changed = live.fetchone() is None
            else:  # inserted, or over an expired row; a live row stays as it is
                changed = (
                    db.execute(
                        "INSERT INTO state (key, value, etag, expires) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                        "etag = excluded.etag, expires = excluded.expires "
                        "WHERE state.expires IS NOT NULL AND state.expires <= ?",
                        (w.key, w.value, w.new_etag, expires, now),
                    ).rowcount
                    > 0
                )
            if not changed:
                raise conflict(w.key, self.where, absent=True)
            return False
        if w.value is None:
            sql, args = f"DELETE FROM state WHERE key = ? AND {_LIVE}", [w.key, now]
        elif w.etag is None:
            db.execute(
                "INSERT INTO state (key, value, etag, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "etag = excluded.etag, expires = excluded.expires",
                (w.key, w.value, w.new_etag, expires),
            )
            return True
        else:
            sql = f"UPDATE state SET value = ?, etag = ?, expires = ? WHERE key = ? AND {_LIVE}"
            args = [w.value, w.new_etag, expires, w.key, now]
        if w.etag is not None:
            sql += " AND etag = ?"
            args.append(w.etag)
        changed = db.execute(sql, args).rowcount > 0
        if w.etag is not None and not changed:
            raise conflict(w.key, self.where)
        return changed

    def _background(self, sql: str, args: tuple[object, ...] = ()) -> None:
        """Run housekeeping (the expiry sweep, a WAL checkpoint) on the worker thread's
        patient connection; nothing waits for it, and a failure is simply retried by the
        next one (expired rows stay invisible meanwhile)."""
        patient = self._patient
        if patient is None:
            return

        def run() -> None:
            # fetchall: a PRAGMA answers with a row, and a statement left unfinished keeps a
            # read snapshot open, so the connection's next commit fails ("SQL statements in
            # progress") or waits for a lock it can never get (a stale snapshot).
            patient.execute(sql, args).fetchall()

        done = asyncio.get_running_loop().run_in_executor(self._thread, run)
        done.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def outbox_pending(self, limit: int) -> builtins.list[OutboxRecord]:
        rows = await self._call(
            lambda db: db.execute(
                "SELECT id, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        )
        return [OutboxRecord(i, p) for i, p in rows]

    async def outbox_remove(self, ids: Sequence[str]) -> None:
        await self._call(
            lambda db: db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        fast, patient, self._fast, self._patient = self._fast, self._patient, None, None
        if fast is not None:
            fast.close()
        if patient is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, patient.close)
        self._thread.shutdown(wait=False)
