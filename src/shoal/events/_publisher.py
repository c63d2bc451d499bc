"""Publishing: pipelined JetStream publishes that return once the server has stored them.

Many concurrent ``publish`` calls share the one connection: each sends its
message with its own reply subject (nats-py's ``publish_async``) and awaits its
own acknowledgement, so a burst is bound by bandwidth, not by round trips.
A publish whose ack does not come (the connection dropped, NATS restarted) is
sent again with the *same* ``Nats-Msg-Id`` until its timeout: JetStream stores
it once whatever happened to the earlier tries. Then :class:`PublishError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import nats.errors
import nats.js.errors

from shoal.backbone._connection import Backbone
from shoal.events._names import event_subject
from shoal.events._tracing import EventSpan, producer_span
from shoal.events._wire import EncodedEvent, encode_event
from shoal.exceptions import EventsError, PublishError

__all__ = ["DEFAULT_PUBLISH_TIMEOUT", "Publisher", "encode_in_span"]

log = logging.getLogger("shoal.events")

DEFAULT_PUBLISH_TIMEOUT = 30.0
ATTEMPT_TIMEOUT = 5.0
"""Seconds to wait for one try's ack before sending the message again (same id)."""
_RETRY_PAUSE = 0.05


def encode_in_span(
    source: str,
    topic: str,
    data: object,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[EncodedEvent, EventSpan]:
    """The event, encoded inside its producer span (a child of the current span), whose
    context it carries; the span is left open for the caller to end. EventsError (the
    span ended with it) for bad input."""
    span = producer_span(source, topic)
    try:
        event = encode_event(
            source,
            topic,
            data,
            key=key,
            headers=headers,
            traceparent=span.traceparent,
            tracestate=span.tracestate,
        )
    except EventsError as exc:
        span.end(str(exc))
        raise
    span.set("messaging.message.id", event.id)
    return event, span


class Publisher:
    """Publishes ``service``'s events in ``app`` over ``backbone``.

    ``shoal.publish`` uses the serving runtime's; scripts, tests and benchmarks make
    their own: ``Publisher(backbone, "shop", "orders")``.
    """

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        *,
        timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        self.backbone = backbone
        self.app = app
        self.service = service
        self.timeout = timeout

    def encode(
        self,
        topic: str,
        data: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> EncodedEvent:
        """The event as :meth:`send` takes it (and the outbox stores it), checked."""
        return encode_event(self.service, topic, data, key=key, headers=headers)

    async def publish(
        self,
        topic: str,
        data: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish one event; its id once JetStream has stored it.

        EventsError for a bad topic, payload or header (nothing is sent);
        PublishError if no ack came within ``timeout`` seconds (30 by default).
        """
        event, span = encode_in_span(self.service, topic, data, key=key, headers=headers)
        try:
            await self.send(event, timeout=timeout)
        except BaseException as exc:
            span.end(f"{type(exc).__name__}: {exc}")
            raise
        span.end()
        return event.id

    async def send(self, event: EncodedEvent, *, timeout: float | None = None) -> None:
        """Send a prebuilt event (``Nats-Msg-Id`` = its id) and await the server's ack.

        The event must be this service's (``ce-source``): its subject is under the
        service's name, which NATS permissions check.
        """
        if event.headers.get("ce-source") != self.service:
            raise EventsError(
                f"event {event.id} was encoded for service "
                f"{event.headers.get('ce-source')!r}; {self.service!r} cannot send it"
            )
        subject = event_subject(self.app, self.service, event.topic)
        headers = {**event.headers, "Nats-Msg-Id": event.id}
        payload = event.body.encode()
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        last: BaseException | None = None
        while (remaining := deadline - loop.time()) > 0:
            if self.backbone.nc.is_closed:
                raise PublishError(
                    f"event {event.id} on topic {event.topic!r}: the NATS connection is closed "
                    "(the instance is stopping); nothing was sent"
                    if last is None
                    else f"event {event.id} on topic {event.topic!r}: the NATS connection closed "
                    "before JetStream acknowledged it; it may or may not be stored"
                )
            try:
                if not self.backbone.connected:
                    async with asyncio.timeout(remaining):
                        await self.backbone.wait_connected()
                    remaining = deadline - loop.time()
                ack = await self.backbone.js.publish(
                    subject,
                    payload,
                    timeout=min(remaining, ATTEMPT_TIMEOUT),
                    headers=headers,  # no Nats-Expected-Stream: stored and sent with each event
                )
                if ack.duplicate:
                    log.debug("event %s (%s) was stored already", event.id, event.topic)
                return
            except nats.js.errors.APIError as exc:
                if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                    last = exc  # JetStream is (re)starting: try again
                else:
                    raise PublishError(
                        f"JetStream refused event {event.id} on topic {event.topic!r}: {exc}"
                    ) from exc
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                last = exc  # no ack: lost connection, NATS restarting, or no stream yet
            if subject in self.backbone.last_refusal:
                raise PublishError(
                    f"NATS refused event {event.id} on topic {event.topic!r}: "
                    f"{self.backbone.last_refusal} (a service may publish only its own events)"
                ) from last
            await asyncio.sleep(min(_RETRY_PAUSE, max(0.0, deadline - loop.time())))
        what = f"{type(last).__name__}: {last}" if last is not None else "no attempt"
        raise PublishError(
            f"event {event.id} on topic {event.topic!r} was not acknowledged within {limit:g} s "
            f"(last: {what}); it may or may not be stored: publishing it again with the same "
            "id stores it at most once"
        ) from last
