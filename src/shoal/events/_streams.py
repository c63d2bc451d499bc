"""The app's two streams: events (``shoal-events-<app>``) and dead letters (``shoal-dlq-<app>``).

File storage, one replica, a two-minute duplicate window (a republish with the
same ``Nats-Msg-Id`` within it is stored once). The supervisor (admin user)
creates or updates them before any instance starts; a runtime on an external
NATS whose user may manage streams creates them if they are missing.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js import api

from shoal.backbone._connection import Backbone
from shoal.events._names import (
    dlq_stream,
    dlq_subjects,
    events_stream,
    events_subjects,
    replay_subjects,
)
from shoal.exceptions import EventsError

__all__ = ["DUPLICATE_WINDOW", "ensure_streams", "stream_configs"]

DUPLICATE_WINDOW = 120.0
"""Seconds within which JetStream drops a message whose id it has stored already."""
EVENTS_MAX_AGE = 7 * 86_400.0
"""Seconds an event stays in the stream: a subscriber down for less misses nothing."""


def stream_configs(app: str) -> list[api.StreamConfig]:
    return [
        api.StreamConfig(
            name=name,
            subjects=subjects,
            storage=api.StorageType.FILE,
            num_replicas=1,
            duplicate_window=DUPLICATE_WINDOW,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_age=max_age,
        )
        for name, subjects, max_age in (
            (events_stream(app), [events_subjects(app), replay_subjects(app)], EVENTS_MAX_AGE),
            (dlq_stream(app), [dlq_subjects(app)], None),
        )
    ]


async def ensure_streams(backbone: Backbone, app: str, *, update: bool = True) -> None:
    """Create the app's event streams if missing; with ``update``, also put the config
    of existing ones right (the supervisor does; a service's user may only read them)."""
    for config in stream_configs(app):
        assert config.name is not None
        try:
            try:
                info = await backbone.js.stream_info(config.name)
            except nats.js.errors.NotFoundError:
                await backbone.js.add_stream(config)
                continue
            current = info.config
            if update and (
                current.subjects != config.subjects
                or current.duplicate_window != config.duplicate_window
                or (current.max_age or None) != (config.max_age or None)
            ):
                await backbone.js.update_stream(config)
        except (TimeoutError, nats.errors.Error) as exc:
            raise EventsError(
                f"cannot set up the event stream {config.name}: {exc or type(exc).__name__} "
                "(`shoal up` creates it; on an external NATS the runtime's user needs "
                "permission to create streams, or an operator creates it)"
            ) from exc
