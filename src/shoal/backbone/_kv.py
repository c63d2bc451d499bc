"""JetStream key-value buckets: bind-or-create, and a push watch that ends when NATS drops.

nats-py's own KV watch does not survive a server restart, so shoal's buckets
(the registry, the traffic policies) are watched here with an ordered consumer
on the bucket's stream: every live entry, then :class:`KvSynced`, then changes.
The watch *ends* when the connection drops; callers keep their last state
(static stability) and watch again once the backbone is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from shoal.backbone._connection import Backbone
from shoal.exceptions import BackboneError

__all__ = ["KvChange", "KvEvent", "KvSynced", "open_bucket", "read_bucket", "watch_bucket"]

_OP_HEADER = "KV-Operation"
_MARKER_HEADER = "Nats-Marker-Reason"
_LOST = object()


@dataclasses.dataclass(frozen=True, slots=True)
class KvChange:
    """``key`` was written (``value``) or removed (``value`` None: deleted, purged, expired)."""

    key: str
    value: bytes | None
    age: float = 0.0
    """Seconds since the server stored the change."""


@dataclasses.dataclass(frozen=True, slots=True)
class KvSynced:
    """Every entry that existed when the watch began has been delivered."""


KvEvent = KvChange | KvSynced


async def open_bucket(backbone: Backbone, config: api.KeyValueConfig) -> KeyValue:
    """Bind to the bucket ``config.bucket``, creating it with ``config`` if it does not exist."""
    try:
        return await backbone.js.key_value(config.bucket)
    except nats.js.errors.BucketNotFoundError:
        return await backbone.js.create_key_value(config)


async def watch_bucket(
    backbone: Backbone, bucket: str, ensure: Callable[[], Awaitable[object]]
) -> AsyncGenerator[KvEvent, None]:
    """Every live entry, then ``KvSynced``, then changes; ends when NATS drops.

    ``ensure`` makes sure the bucket exists (it is awaited once connected).
    Raises :class:`BackboneError` if the watch cannot be set up.
    """
    await backbone.wait_connected()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    unsubscribe = backbone.on_lost(lambda: queue.put_nowait(_LOST))
    prefix = f"$KV.{bucket}."

    async def on_msg(msg: Any) -> None:
        queue.put_nowait(msg)

    sub = None
    try:
        try:
            await ensure()
            sub = await backbone.js.subscribe(
                f"{prefix}>",
                stream=f"KV_{bucket}",
                cb=on_msg,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                inactive_threshold=30.0,
            )
            info = await sub.consumer_info()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BackboneError(f"cannot watch {bucket}: {exc or type(exc).__name__}") from exc
        synced = False
        # Empty only if the server has delivered nothing either: messages it has
        # sent may still be in flight to us, and the last of them says pending 0.
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered:
            synced = True
            yield KvSynced()
        while (msg := await queue.get()) is not _LOST:
            yield _decode(msg, prefix)
            if not synced and msg.metadata.num_pending == 0:
                synced = True
                yield KvSynced()
    finally:
        unsubscribe()
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _decode(msg: Any, prefix: str) -> KvChange:
    key = msg.subject[len(prefix) :]
    headers = msg.headers or {}
    age = time.time() - msg.metadata.timestamp.timestamp()
    if _OP_HEADER in headers or _MARKER_HEADER in headers:
        return KvChange(key, None, age)  # DEL, PURGE, or a server expiry marker
    return KvChange(key, bytes(msg.data), age)


async def read_bucket(
    backbone: Backbone, bucket: str, ensure: Callable[[], Awaitable[object]]
) -> dict[str, bytes]:
    """The bucket's live entries, read once (the snapshot part of a watch).

    Raises :class:`BackboneError` if NATS drops before the snapshot is complete.
    """
    entries: dict[str, bytes] = {}
    async with contextlib.aclosing(watch_bucket(backbone, bucket, ensure)) as events:
        async for event in events:
            if isinstance(event, KvSynced):
                return entries
            if event.value is None:
                entries.pop(event.key, None)
            else:
                entries[event.key] = event.value
    raise BackboneError(f"lost the NATS backbone while reading {bucket}")
