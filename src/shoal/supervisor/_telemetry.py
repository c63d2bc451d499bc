"""The supervisor's side of telemetry: receive what instances ship, keep it in the store.

Instances publish batches of finished spans on ``shoal.<app>.telemetry.spans``
(see ``runtime._telemetry``); the collector validates each span and writes the
batch to ``DIR/.shoal/telemetry.db``, which outlives `shoal down`. A malformed
span is dropped and counted, never fatal; so is a batch the store refuses.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.exceptions import ShoalError
from shoal.runtime._telemetry import span_subject
from shoal.telemetry import AsyncTelemetryStore, SpanRecord

__all__ = ["TelemetryCollector"]

log = logging.getLogger("shoal.telemetry")


class TelemetryCollector:
    """Subscribes to the app's span batches and stores them."""

    def __init__(self, backbone: Backbone, app: str, state_dir: Path) -> None:
        self._backbone = backbone
        self._subject = span_subject(app)
        self.store = AsyncTelemetryStore(state_dir / "telemetry.db")
        self._sub: Any = None
        self.stored = 0
        self.rejected = 0

    async def start(self) -> None:
        await self.store.start()
        self._sub = await self._backbone.nc.subscribe(self._subject, cb=self._on_batch)

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        await self.store.aclose()

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
