"""The supervisor's side of telemetry: receive what instances ship, keep it in the store.

Instances publish batches of finished spans on ``shoal.<app>.telemetry.spans``
(see ``runtime._telemetry``); the collector validates each span and writes the
batch to ``DIR/.shoal/telemetry.db``, which outlives `shoal down`. A malformed
span is dropped and counted, never fatal; so is a batch the store refuses.

Logs come from the instances' output, whatever their language: each line the
supervisor reads is parsed (``_log_records``) and queued, and a task writes the
queue to the store every half second. Reading a pipe never waits for SQLite: the
queue is bounded, and when it is full the oldest record is dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.exceptions import ShoalError
from shoal.runtime._telemetry import span_subject
from shoal.supervisor._log_records import Stream, plain, render, structured
from shoal.telemetry import AsyncTelemetryStore, LogRecord, SpanRecord

__all__ = ["TelemetryCollector"]

log = logging.getLogger("shoal.telemetry")


class TelemetryCollector:
    """Subscribes to the app's span batches and stores them."""

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        state_dir: Path,
        *,
        log_interval: float = 0.5,
        max_log_batch: int = 5_000,
        max_log_queue: int = 50_000,
    ) -> None:
        self._backbone = backbone
        self._subject = span_subject(app)
        self.store = AsyncTelemetryStore(state_dir / "telemetry.db")
        self._sub: Any = None
        self.stored = 0
        self.rejected = 0
        self._log_interval = log_interval
        self._max_log_batch = max_log_batch
        self._logs: collections.deque[LogRecord] = collections.deque(maxlen=max_log_queue)
        self._log_task: asyncio.Task[None] | None = None
        self.logs_stored = 0
        self.logs_dropped = 0

    async def start(self) -> None:
        await self.store.start()
        self._sub = await self._backbone.nc.subscribe(self._subject, cb=self._on_batch)
        self._log_task = asyncio.create_task(self._write_logs(), name="shoal-telemetry-logs")

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._log_task is not None:
            self._log_task.cancel()
            await asyncio.wait({self._log_task}, timeout=5.0)
            self._log_task = None
        while self._logs:  # the last lines (instances stop before the collector)
            await self._flush_logs()
        await self.store.aclose()

    # -- logs ----------------------------------------------------------------------

    def log(self, service: str, instance: str, stream: Stream, line: str) -> str:
        """Queue one line of an instance's output; returns it as the console shows it.

        A structured (JSON) line is shown readably (``render``); a plain one as it is.
        Never blocks: the store is written by a task (see the module's docstring).
        """
        now = time.time_ns()
        shown = line
        record = structured(service, instance, line, now)
        if record is not None:
            shown = render(record)
        else:
            record = plain(service, instance, stream, line, now)
            if record is None:
                return line
        if len(self._logs) == self._logs.maxlen:
            self.logs_dropped += 1
        self._logs.append(record)
        return shown

    async def _write_logs(self) -> None:
        while True:
            await asyncio.sleep(self._log_interval)
            while self._logs:
                await self._flush_logs()

    async def _flush_logs(self) -> None:
        batch = [self._logs.popleft() for _ in range(min(len(self._logs), self._max_log_batch))]
        try:
            self.logs_stored += await self.store.add_logs(batch)
        except ShoalError as exc:
            self.logs_dropped += len(batch)
            log.warning("could not store %d log records: %s", len(batch), exc)

    async def _on_batch(self, msg: Any) -> None:
        try:
            items = json.loads(msg.data)
        except ValueError:
            self.rejected += 1
            return
        spans: list[SpanRecord] = []
        for item in items if isinstance(items, list) else ():
            try:
                spans.append(SpanRecord.model_validate(item))
            except ValidationError:
                self.rejected += 1
        if not spans:
            return
        try:
            self.stored += await self.store.add_spans(spans)
        except ShoalError as exc:
            self.rejected += len(spans)
            log.warning("could not store %d spans: %s", len(spans), exc)
