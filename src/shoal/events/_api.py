"""``shoal.publish``: publish from inside a service, through the runtime's connection."""

from __future__ import annotations

from collections.abc import Mapping

from shoal.exceptions import EventsError
from shoal.runtime._context import current_publisher

__all__ = ["publish"]


async def publish(
    topic: str,
    data: object,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Publish ``data`` (JSON-serialisable) on ``topic`` as this service; returns the event
    id once JetStream has stored the event.

    ``key`` is the CloudEvents partition key; ``headers`` are extra one-line string
    headers (not ``ce-*``, ``nats-*``, ``content-type``, ``traceparent``). Raises
    EventsError for bad input (nothing is sent) or outside a shoal service, and
    PublishError if JetStream did not acknowledge within 30 s (retried meanwhile
    across reconnects, with the same id: stored at most once).
    """
    publisher = current_publisher()
    if publisher is None:
        raise EventsError(
            f"shoal.publish({topic!r}, ...) needs a running shoal service: call it from a "
            "service started by `shoal up` or `shoal serve`; a script or test can use "
            "shoal.events.Publisher(backbone, app, service) instead"
        )
    return await publisher.publish(topic, data, key=key, headers=headers)
