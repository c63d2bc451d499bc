"""What a subscriber's handler receives: :class:`Event`, decoded from a NATS message."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from shoal.events._wire import parse_time, user_headers
from shoal.exceptions import EventsError

__all__ = ["Event", "decode_event"]


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent as a handler sees it.

    ``type`` is the topic, ``source`` the publishing service, ``data`` the decoded
    JSON, ``headers`` the publisher's own headers, ``delivery`` the 1-based count of
    deliveries to this subscriber (2 or more: a redelivery), ``traceparent`` the
    publisher's W3C trace context (``trace_id`` its trace, ``span_id`` its span).
    """

    id: str
    source: str
    type: str
    time: dt.datetime
    data: Any
    key: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delivery: int = 1
    traceparent: str | None = None

    @property
    def topic(self) -> str:
        return self.type

    @property
    def trace_id(self) -> str | None:
        """The 32 hex digits of the publisher's trace, if it sent one."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None

    @property
    def span_id(self) -> str | None:
        """The 16 hex digits of the publisher's span (the handler's span's parent)."""
        parts = (self.traceparent or "").split("-")
        return parts[2] if len(parts) >= 4 and len(parts[2]) == 16 else None


def decode_event(headers: Mapping[str, str], body: bytes, delivery: int) -> Event:
    """The Event in a message's headers and body; EventsError if it is not a shoal event."""
    try:
        event_id = headers["ce-id"]
        source = headers["ce-source"]
        topic = headers["ce-type"]
        when = headers["ce-time"]
    except KeyError as exc:
        raise EventsError(f"not a CloudEvent: header {exc.args[0]} is missing") from exc
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventsError(f"event {event_id} ({topic}): the body is not JSON: {exc}") from exc
    return Event(
        id=event_id,
        source=source,
        type=topic,
        time=parse_time(when),
        data=data,
        key=headers.get("ce-partitionkey"),
        headers=user_headers(headers),
        delivery=delivery,
        traceparent=headers.get("traceparent"),
    )
