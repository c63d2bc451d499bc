"""The telemetry store for asyncio code: every SQLite call on one worker thread.

SQLite calls block (a batch insert, a retention pass over a large file), so the
supervisor's event loop must not make them. One thread, not a pool: the
connection belongs to the thread that created it, and one writer at a time is all
SQLite allows anyway. Calls queue in the order they were made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

from shoal.exceptions import TelemetryError
from shoal.telemetry._records import LogLevel, LogRecord, MetricPoint, SpanRecord, TraceSummary
from shoal.telemetry._store import TelemetryStore

__all__ = ["AsyncTelemetryStore"]

log = logging.getLogger("shoal.telemetry")

P = ParamSpec("P")
T = TypeVar("T")


class AsyncTelemetryStore:
    """:class:`TelemetryStore` with ``async`` methods, plus retention every ``retention_interval``.

    ``await start()`` (or ``async with``) opens the file; ``await aclose()`` closes it.
    Cancelling a call stops the wait, not the SQLite work already queued.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_age: float = 7 * 86400,
        max_bytes: int = 256 * 2**20,
        clock: Callable[[], float] = time.time,
        retention_interval: float = 60.0,
    ) -> None:
        if retention_interval <= 0:
            raise ValueError("retention_interval must be positive")
        self.path = path
        self.retention_interval = retention_interval
        self._open = functools.partial(
            TelemetryStore, path, max_age=max_age, max_bytes=max_bytes, clock=clock
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._store: TelemetryStore | None = None
        self._retention: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open (or create) the file on the worker thread and start retention."""
        if self._executor is not None:
            raise TelemetryError(f"{self.path}: the telemetry store is already started")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="shoal-telemetry"
        )
        try:
            self._store = await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._retention = asyncio.create_task(self._retain(), name="shoal-telemetry-retention")

    async def aclose(self) -> None:
        """Stop retention, close the file on its thread, end the thread. Idempotent."""
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.wait({self._retention}, timeout=5.0)
            self._retention = None
        executor, store = self._executor, self._store
        self._executor = self._store = None
        if executor is None:
            return
        try:
            if store is not None:
                await asyncio.get_running_loop().run_in_executor(executor, store.close)
        finally:
            executor.shutdown(wait=True)  # its one thread is idle: this returns at once

    async def __aenter__(self) -> AsyncTelemetryStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def add_spans(self, spans: Sequence[SpanRecord]) -> int:
        return await self._run(self._opened().add_spans, spans)

    async def add_logs(self, logs: Sequence[LogRecord]) -> int:
        return await self._run(self._opened().add_logs, logs)

    async def add_metrics(self, points: Sequence[MetricPoint]) -> int:
        return await self._run(self._opened().add_metrics, points)

    async def trace(self, trace_id: str) -> list[SpanRecord]:
        return await self._run(self._opened().trace, trace_id)

    async def traces(
        self,
        *,
        service: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        errors_only: bool = False,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]:
        return await self._run(
            self._opened().traces,
            service=service,
            since_ns=since_ns,
            until_ns=until_ns,
            errors_only=errors_only,
            min_duration_ms=min_duration_ms,
            limit=limit,
        )

    async def failures(self, limit: int = 50) -> list[SpanRecord]:
        return await self._run(self._opened().failures, limit)

    async def logs(
        self,
        *,
        service: str | None = None,
        level: LogLevel | None = None,
        text: str | None = None,
        trace_id: str | None = None,
        since_ns: int | None = None,
        limit: int = 200,
    ) -> list[LogRecord]:
        return await self._run(
            self._opened().logs,
            service=service,
            level=level,
            text=text,
            trace_id=trace_id,
            since_ns=since_ns,
            limit=limit,
        )

    async def metrics(
        self,
        name: str,
        *,
        service: str | None = None,
        since_ns: int | None = None,
        limit: int = 1000,
    ) -> list[MetricPoint]:
        return await self._run(
            self._opened().metrics, name, service=service, since_ns=since_ns, limit=limit
        )

    async def services(self) -> list[str]:
        return await self._run(self._opened().services)

    async def size_bytes(self) -> int:
        return await self._run(self._opened().size_bytes)

    async def enforce_retention(self) -> int:
        return await self._run(self._opened().enforce_retention)

    def _opened(self) -> TelemetryStore:
        if self._store is None:
            raise TelemetryError(f"{self.path}: the telemetry store is not started (or closed)")
        return self._store

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            raise TelemetryError(f"{self.path}: the telemetry store is not started (or closed)")
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _retain(self) -> None:
        """Retention now (what piled up while shoal was down) and every interval after."""
        while True:
            try:
                deleted = await self.enforce_retention()
            except TelemetryError as exc:
                log.warning("telemetry retention failed: %s", exc)
            else:
                if deleted:
                    log.debug("telemetry retention deleted %d rows", deleted)
            await asyncio.sleep(self.retention_interval)
