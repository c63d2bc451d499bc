"""One durable pull consumer of one (service, topic): fetch, handle, ack, retry, dead-letter.

Messages are pulled with ``$JS.API.CONSUMER.MSG.NEXT`` requests whose credit never
exceeds the free handler slots (``concurrency``), so an instance holds at most
that many unacknowledged deliveries; they arrive on the instance's own inbox and
each is handled in its own task as it comes (no batch waits for stragglers).
A 408/409 status returns the credit it names (``Nats-Pending-Messages``); a lost
connection or a server restart forgets it (and the credit of a request that
should have expired). The instances of a service share the consumer.

Each delivery: decode the CloudEvent, run the handler inside a CONSUMER span
(child of the publisher's), keep the delivery alive (``in_progress``) while the
handler runs past a third of ``ack_wait``, then ack. A handler exception naks
with the backoff's delay, or after the last allowed delivery stores a dead
letter (awaited) and terminates the original (see ``_delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import api

from shoal.backbone._connection import Backbone
from shoal.events._deadletter import send_dead_letter
from shoal.events._delivery import DeadLetter, decide, describe_error
from shoal.events._event import Event, decode_event
from shoal.events._keepalive import KeepAlive
from shoal.events._names import (
    consumer_name,
    events_stream,
    replay_subject,
    seen_key,
    subscriber_filter,
    topic_of_subject,
)
from shoal.events._subscribe import Subscription
from shoal.events._tracing import consumer_span
from shoal.exceptions import ConcurrencyError, EventsError

if TYPE_CHECKING:
    from shoal.state import StateStore

__all__ = ["SEEN_TTL", "EventConsumer", "StoreSource"]

log = logging.getLogger("shoal.events")

StoreSource = Callable[[], Awaitable["StateStore"]]
SEEN_TTL = 7 * 86_400.0
"""Seconds an idempotent consumer remembers a handled event id (longer than any redelivery)."""
TX_ATTEMPTS = 10
"""Runs of an idempotent handler whose commit met a stale ETag, before it counts as failed
(a commit that lost the event's marker to another instance is skipped on the next run)."""
PULL_EXPIRES = 5.0
MAX_ACK_PENDING = 1024
_NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)


class EventConsumer:
    """Handles ``sub``'s topic for ``service``: every event once per service, at least once."""

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        sub: Subscription,
        *,
        store: StoreSource | None = None,
        pull_expires: float = PULL_EXPIRES,
    ) -> None:
        if sub.idempotent and store is None:
            raise EventsError(
                f"{sub.name}: an idempotent handler of {sub.topic!r} needs the service's state "
                "store, and there is none here (run under `shoal serve`, or pass store=)"
            )
        self.backbone = backbone
        self.app = app
        self.service = service
        self.sub = sub
        self.name = consumer_name(service, sub.topic)
        self.stream = events_stream(app)
        self._store = store
        self._expires = pull_expires
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}"
        self._inbox = ""
        self._nats_sub: NatsSubscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._active: set[str] = set()
        self._credit = 0
        self._credit_until = 0.0
        self._wake = asyncio.Event()
        self._stopping = False
        self._recreate = False
        self._warned = -math.inf
        self._loop_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.handled = 0
        self.skipped = 0
        self.retried = 0
        self.dead_lettered = 0

    # -- set-up ----------------------------------------------------------------------

    def config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.sub.ack_wait,
            max_deliver=-1,  # shoal counts: the dead letter is stored before the term
            filter_subjects=[
                subscriber_filter(self.app, self.sub.topic),
                replay_subject(self.app, self.service, self.sub.topic),
            ],
            max_ack_pending=max(MAX_ACK_PENDING, self.sub.concurrency * 4),
            description=f"shoal: {self.service} handles {self.sub.topic} ({self.sub.name})",
        )

    async def ensure(self) -> api.ConsumerInfo:
        """Create the durable consumer, or bring its config up to date."""
        try:
            return await self.backbone.js.add_consumer(self.stream, self.config())
        except (nats.errors.Error, TimeoutError) as exc:
            refusal = self.backbone.last_refusal
            raise EventsError(
                f"cannot create the consumer {self.name} of {self.service} on topic "
                f"{self.sub.topic!r} in stream {self.stream}: {exc or type(exc).__name__}"
                f"{'; NATS: ' + refusal if refusal else ''}"
            ) from exc

    async def start(self) -> api.ConsumerInfo:
        info = await self.ensure()
        self._inbox = self.backbone.nc.new_inbox()
        self._nats_sub = await self.backbone.nc.subscribe(self._inbox, cb=self._on_msg)
        self._unsubscribe = self.backbone.on_back(self._forget_credit)
        self._loop_task = asyncio.create_task(self._pull_loop(), name=f"shoal-events-{self.name}")
        return info

    # -- pulling -------------------------------------------------------------------

    def _forget_credit(self) -> None:
        self._credit = 0
        self._wake.set()

    async def _pull_loop(self) -> None:
        loop = asyncio.get_running_loop()
        concurrency = self.sub.concurrency
        while not self._stopping:
            now = loop.time()
            if self._credit and now > self._credit_until:
                self._credit = 0  # that request has expired; its 408 was lost
            if self._recreate and self.backbone.connected:
                try:
                    await self.ensure()
                    self._recreate = False
                    log.warning("consumer %s was gone; made it again", self.name)
                except EventsError as exc:
                    if now - self._warned > 30.0:
                        self._warned = now
                        log.warning("%s (trying again)", exc)
            want = concurrency - len(self._tasks) - self._credit
            if (
                self.backbone.connected
                and want > 0
                and (self._credit == 0 or want >= max(1, concurrency // 2))
            ):
                request = {"batch": want, "expires": int(self._expires * 1e9)}
                try:
                    await self.backbone.nc.publish(
                        self._next, json.dumps(request).encode(), reply=self._inbox
                    )
                    self._credit += want
                    self._credit_until = now + self._expires + 0.5
                except _NATS_ERRORS as exc:
                    log.debug("pull request for %s failed: %r", self.name, exc)
            self._wake.clear()
            wait = max(0.05, self._credit_until - now) if self._credit else 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, 1.0)):
                    await self._wake.wait()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get(api.Header.STATUS)
        if status:
            self._on_status(status, headers)
            return
        self._credit = max(0, self._credit - 1)
        if self._stopping:  # granted as we stopped: hand it straight to a sibling
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.nak()
            return
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == "100":  # idle heartbeat
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self._credit = max(0, self._credit - int(pending))
        else:
            self._credit = 0
        description = headers.get(api.Header.DESCRIPTION, "")
        if status == "503" or "consumer deleted" in description.lower():
            self._recreate = True  # gone (a wiped store, an operator): make it again
        elif status not in ("404", "408"):
            log.debug("consumer %s: status %s %s", self.name, status, description)
        self._wake.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("handling an event of %s failed", self.name, exc_info=task.exception())

    # -- handling -----------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = meta.num_delivered
        headers = dict(msg.headers or {})
        try:
            event = decode_event(headers, msg.data, delivery)
        except EventsError as exc:
            await self._dead_letter(msg, headers, delivery, describe_error(exc))
            return
        if event.id in self._active:  # redelivered while this instance still runs it
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.nak(delay=min(self.sub.ack_wait, 1.0))
            return
        self._active.add(event.id)
        span = consumer_span(
            self.service,
            self.name,
            event.type,
            event.id,
            delivery,
            event.traceparent,
            headers.get("tracestate"),
        )
        span.attach()
        keepalive = KeepAlive(msg, self.sub.ack_wait, lambda: self.backbone.connected)
        try:
            try:
                await self._run(event)
            except Exception as exc:
                error = describe_error(exc)
                span.end(error)
                keepalive.cancel()
                await self._failed(msg, event, headers, delivery, error)
            else:
                span.end()
                keepalive.cancel()
                try:
                    await msg.ack()
                    self.handled += 1
                except _NATS_ERRORS as exc:  # redelivered after ack_wait; idempotent skips it
                    log.warning("could not ack event %s on %s: %r", event.id, self.name, exc)
        finally:
            keepalive.cancel()
            self._active.discard(event.id)

    async def _run(self, event: Event) -> None:
        """Call the handler; an idempotent one in a transaction that also creates the
        event's seen marker, create-only: of two commits of one event (a redelivery run
        by another instance meanwhile) exactly one succeeds, and the other, retried,
        finds the marker and skips the event."""
        if not self.sub.idempotent:
            await self.sub.call(event)
            return
        assert self._store is not None
        store = await self._store()
        marker = seen_key(self.name, event.id)
        for attempt in range(1, TX_ATTEMPTS + 1):
            try:
                async with store.transaction() as tx:
                    if await tx.get(marker) is not None:
                        self.skipped += 1
                        log.info(
                            "%s: event %s (delivery %d) was handled and committed before; "
                            "acked without running the handler again",
                            self.sub.name, event.id, event.delivery,
                        )  # fmt: skip
                        return
                    await self.sub.call(event, tx)
                    tx.set(marker, 1, absent=True, ttl=SEEN_TTL)
                return
            except ConcurrencyError:  # a stale ETag, or the marker committed by another
                # instance meanwhile: read again, in a new transaction
                if attempt == TX_ATTEMPTS:
                    raise

    async def _failed(
        self, msg: Msg, event: Event, headers: dict[str, str], delivery: int, error: str
    ) -> None:
        decision = decide(delivery, self.sub.max_deliveries, self.sub.backoff)
        if isinstance(decision, DeadLetter):
            await self._dead_letter(msg, headers, delivery, error, event.id, event.type)
            return
        log.warning(
            "%s: event %s (%s) failed on delivery %d of %d: %s; again in %g s",
            self.sub.name, event.id, event.type, delivery, self.sub.max_deliveries, error,
            decision.delay,
        )  # fmt: skip
        self.retried += 1
        with contextlib.suppress(*_NATS_ERRORS):
            await msg.nak(delay=decision.delay)

    async def _dead_letter(
        self,
        msg: Msg,
        headers: dict[str, str],
        delivery: int,
        error: str,
        event_id: str | None = None,
        topic: str | None = None,
    ) -> None:
        event_id = event_id or headers.get("ce-id") or f"seq-{msg.metadata.sequence.stream}"
        topic = topic or topic_of_subject(msg.subject)[1]
        try:
            await send_dead_letter(
                self.backbone, self.app, self.service, self.name, msg, headers,
                delivery=delivery, error=error, event_id=event_id, topic=topic,
            )  # fmt: skip
        except _NATS_ERRORS as exc:
            log.error(
                "%s: could not store dead letter of event %s (%r); it comes back in %g s",
                self.name, event_id, exc, self.sub.backoff[-1],
            )  # fmt: skip
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.nak(delay=self.sub.backoff[-1])
            return
        with contextlib.suppress(*_NATS_ERRORS):
            await msg.term()
        self.dead_lettered += 1
        log.error(
            "%s: event %s (%s) failed %d time(s), moved to the dead letters (`shoal events`): %s",
            self.sub.name, event_id, topic, delivery, error,
        )  # fmt: skip

    # -- stopping ------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop pulling; let running handlers finish within ``timeout`` seconds."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for task in pending:  # left unacked: redelivered after ack_wait
                task.cancel()
            if pending:
                log.warning(
                    "%s: %d handler(s) still running after the drain timeout; their events "
                    "will be redelivered", self.name, len(pending),
                )  # fmt: skip
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(*_NATS_ERRORS):
            await self.backbone.nc.flush(timeout=2)  # the acks are on their way
        await self.aclose()

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in [self._loop_task, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._loop_task, *self._tasks] if t is not None),
            return_exceptions=True,
        )
        if self._nats_sub is not None:
            with contextlib.suppress(Exception):
                await self._nats_sub.unsubscribe()
            self._nats_sub = None
