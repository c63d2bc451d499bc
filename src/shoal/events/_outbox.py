"""The transactional outbox: events committed with state writes, then relayed to JetStream.

    async with shoal.state().transaction() as tx:
        tx.set("order:7", {"status": "placed"})
        tx.publish("orders.placed", {"order": 7})     # stored in the same commit

``tx.publish`` encodes the event at once (bad input fails there, before the
commit) and stages it as an outbox record next to the writes; the backend commits
both or neither. An :class:`OutboxRelay` then sends each pending record with its
own id as ``Nats-Msg-Id`` and removes it once JetStream has acknowledged it. A
crash at any point loses nothing: a record committed but not yet sent is sent by
the next relay over the store (at the instance's restart, or by another replica),
and one sent but not yet removed is sent again and stored once, JetStream
dropping the duplicate id within its window (two minutes). Past that window a
resend can be stored twice; handlers that must not see that use
``@subscribe(..., idempotent=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping

from shoal.events._consumer import StoreSource
from shoal.events._publisher import Publisher, encode_in_span
from shoal.events._wire import EncodedEvent
from shoal.exceptions import EventsError, ShoalError
from shoal.runtime._context import current_publisher
from shoal.state._api import Transaction
from shoal.state._backend import OutboxRecord

__all__ = ["OutboxRelay", "stage_event"]

log = logging.getLogger("shoal.events")

BATCH = 256
"""Records read, sent (pipelined) and removed per round."""


def _source() -> str:
    publisher = current_publisher()
    if publisher is not None:
        return publisher.service
    service = os.environ.get("SHOAL_SERVICE", "")
    if not service:
        raise EventsError(
            "tx.publish needs to know which service publishes: call it in a service run by "
            "`shoal up` or `shoal serve` (or set SHOAL_SERVICE)"
        )
    return service


def stage_event(
    tx: Transaction,
    topic: str,
    data: object,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Encode the event (EventsError for bad input) and stage it in ``tx``; its id."""
    event, span = encode_in_span(_source(), topic, data, key=key, headers=headers)
    span.set("shoal.outbox", True)
    tx.add_outbox(OutboxRecord(event.id, json.dumps(event.to_json(), separators=(",", ":"))))
    span.end()
    return event.id


class OutboxRelay:
    """Sends the outbox records of one store through ``publisher``, oldest first.

    :meth:`run` relays at once (records a crashed process left), then whenever
    :meth:`wake` is called (a commit with records in this process) and every
    ``poll`` seconds while ``should_poll()`` says so (records another process left).
    A round that cannot send keeps the records and tries again after a pause.
    """

    def __init__(
        self,
        store: StoreSource,
        publisher: Publisher,
        *,
        poll: float = 1.0,
        should_poll: Callable[[], bool] = lambda: True,
        retry_pause: float = 1.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._poll = poll
        self._should_poll = should_poll
        self._retry_pause = retry_pause
        self._wake = asyncio.Event()
        self.relayed = 0
        """Records sent and removed so far."""

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Send and remove every pending record, in rounds of BATCH; how many."""
        store = await self._store()
        done = 0
        while records := await store.backend.outbox_pending(BATCH):
            events = [_decode(r) for r in records]
            await asyncio.gather(*(self._publisher.send(e) for e in events if e is not None))
            await store.backend.outbox_remove([r.id for r in records])
            done += len(records)
            self.relayed += len(records)
            if len(records) < BATCH:
                break
        return done

    async def run(self, *, at_once: bool = True) -> None:
        """Relay until cancelled: first at once (unless ``at_once`` is false), then on
        :meth:`wake` and every ``poll`` seconds while ``should_poll()``."""
        wait = 0.0 if at_once else self._next_wait()
        failures = 0
        while True:
            if wait:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.relay_once()
            except ShoalError as exc:  # NATS away past the publish timeout, store down
                failures += 1
                pause = min(30.0, self._retry_pause * 2 ** min(failures - 1, 5))
                log.warning(
                    "outbox relay: %s; the events stay in the outbox, trying again in %g s",
                    exc, pause,
                )  # fmt: skip
                await asyncio.sleep(pause)
                wait = 0.0
                continue
            failures = 0
            wait = self._next_wait()

    def _next_wait(self) -> float:
        return self._poll if self._should_poll() else 3600.0


def _decode(record: OutboxRecord) -> EncodedEvent | None:
    """The event a record holds; None (logged, then removed) for one no relay can send."""
    try:
        return EncodedEvent.from_json(json.loads(record.payload))
    except (ValueError, EventsError) as exc:  # only shoal writes them: a damaged row
        log.error(
            "outbox record %s is not an event (%s) and cannot be sent; removed from the "
            "outbox, its payload was: %.4000s",
            record.id, exc, record.payload,
        )  # fmt: skip
        return None
