"""The NATS subjects a service's user may publish to for events (see backbone._permissions)."""

from __future__ import annotations

from shoal.events._names import dlq_stream, events_stream

__all__ = ["event_permissions"]


def event_permissions(app: str, service: str) -> list[str]:
    events = events_stream(app)
    return [
        f"shoal.{app}.events.{service}.>",  # its own events: the subject proves ce-source
        f"shoal.{app}.dlq.{service}.>",  # its own dead letters
        f"$JS.API.STREAM.INFO.{events}",
        f"$JS.API.STREAM.INFO.{dlq_stream(app)}",
        f"$JS.API.CONSUMER.CREATE.{events}.*",  # create or update a durable consumer
        f"$JS.API.CONSUMER.MSG.NEXT.{events}.*",  # pull
        f"$JS.ACK.{events}.>",  # ack, nak, in-progress, term
    ]
