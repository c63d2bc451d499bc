"""The service registry on a JetStream key-value bucket, watched by push.

Bucket ``shoal-registry-<app>``, key ``<service>.<instance>``, value the JSON
``InstanceRecord``. Instances re-put their record as a heartbeat; watchers drop
an entry ``ttl`` seconds after its last write (see ``EndpointCache``), so a
SIGKILLed instance vanishes without anyone deleting it. The bucket's max age
only cleans up what nobody deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.exceptions import BackboneError, RegistryError
from shoal.registry._records import Delete, InstanceRecord, Put, RegistryUpdate, Synced

__all__ = ["NatsRegistry", "bucket_name"]

_BUCKET_MAX_AGE = 120.0
_OP_HEADER = "KV-Operation"
_MARKER_HEADER = "Nats-Marker-Reason"
_LOST = object()


def bucket_name(app: str) -> str:
    return f"shoal-registry-{app}"


class NatsRegistry:
    """Implements the ``RegistryBackend`` protocol on NATS JetStream KV."""

    def __init__(self, backbone: Backbone, app: str, *, op_timeout: float = 2.0) -> None:
        self._backbone = backbone
        self.app = app
        self.bucket = bucket_name(app)
        self._prefix = f"$KV.{self.bucket}."
        self._kv: KeyValue | None = None
        self._op_timeout = op_timeout

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            js = self._backbone.js
            try:
                self._kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self.bucket,
                        description=f"shoal service registry of app {self.app}",
                        history=1,
                        ttl=_BUCKET_MAX_AGE,
                        storage=api.StorageType.FILE,
                    )
                )
        return self._kv

    async def put(self, record: InstanceRecord) -> None:
        data = record.model_dump_json().encode()
        await self._op("register", record.key, self._put(record.key, data))

    async def _put(self, key: str, data: bytes) -> None:
        kv = await self._bucket()
        try:
            await kv.put(key, data)
        except nats.js.errors.NotFoundError:
            self._kv = None  # the bucket vanished (a memory-only server restarted): recreate
            kv = await self._bucket()
            await kv.put(key, data)

    async def delete(self, service: str, instance: str) -> None:
        key = f"{service}.{instance}"

        async def _delete() -> None:
            await (await self._bucket()).delete(key)

        await self._op("deregister", key, _delete())

    async def _op(self, what: str, key: str, coro: Any) -> None:
        try:
            await asyncio.wait_for(coro, self._op_timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._kv = None
            raise RegistryError(
                f"could not {what} {key} in {self.bucket}: {exc or type(exc).__name__}"
            ) from exc

    async def watch(self) -> AsyncIterator[RegistryUpdate]:
        """Every live entry, then ``Synced``, then changes; ends when NATS drops."""
        await self._backbone.wait_connected()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        unsubscribe = self._backbone.on_lost(lambda: queue.put_nowait(_LOST))

        async def on_msg(msg: Any) -> None:
            queue.put_nowait(msg)

        sub = None
        try:
            try:
                await self._bucket()
                sub = await self._backbone.js.subscribe(
                    f"{self._prefix}>",
                    stream=f"KV_{self.bucket}",
                    cb=on_msg,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    inactive_threshold=30.0,
                )
                info = await sub.consumer_info()
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                self._kv = None
                raise BackboneError(f"cannot watch {self.bucket}: {exc}") from exc
            synced = False
            # Empty only if the server has delivered nothing either: messages it has
            # sent may still be in flight to us, and the last of them says pending 0.
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if info.num_pending == 0 and not delivered:
                synced = True
                yield Synced()
            while (msg := await queue.get()) is not _LOST:
                update = self._decode(msg)
                if update is not None:
                    yield update
                if not synced and msg.metadata.num_pending == 0:
                    synced = True
                    yield Synced()
        finally:
            unsubscribe()
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _decode(self, msg: Any) -> RegistryUpdate | None:
        key = msg.subject[len(self._prefix) :]
        service, _, instance = key.partition(".")
        headers = msg.headers or {}
        if _OP_HEADER in headers or _MARKER_HEADER in headers:
            return Delete(service, instance)  # DEL, PURGE, or a server expiry marker
        try:
            record = InstanceRecord.model_validate_json(msg.data)
        except ValidationError:
            return None  # not ours to understand; a newer writer perhaps
        age = time.time() - msg.metadata.timestamp.timestamp()
        return Put(record, age=age)

    async def aclose(self) -> None:
        self._kv = None
