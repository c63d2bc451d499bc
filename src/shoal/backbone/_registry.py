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
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.backbone._kv import KvChange, KvSynced, open_bucket, watch_bucket
from shoal.exceptions import BackboneError, RegistryError
from shoal.registry._records import Delete, InstanceRecord, Put, RegistryUpdate, Synced

__all__ = ["NatsRegistry", "bucket_name"]

_BUCKET_MAX_AGE = 120.0


def bucket_name(app: str) -> str:
    return f"shoal-registry-{app}"


class NatsRegistry:
    """Implements the ``RegistryBackend`` protocol on NATS JetStream KV."""

    def __init__(self, backbone: Backbone, app: str, *, op_timeout: float = 2.0) -> None:
        self._backbone = backbone
        self.app = app
        self.bucket = bucket_name(app)
        self._kv: KeyValue | None = None
        self._op_timeout = op_timeout

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(
                self._backbone,
                api.KeyValueConfig(
                    bucket=self.bucket,
                    description=f"shoal service registry of app {self.app}",
                    history=1,
                    ttl=_BUCKET_MAX_AGE,
                    storage=api.StorageType.FILE,
                ),
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
        try:
            async with contextlib.aclosing(
                watch_bucket(self._backbone, self.bucket, self._bucket)
            ) as events:
                async for event in events:
                    update = Synced() if isinstance(event, KvSynced) else self._decode(event)
                    if update is not None:
                        yield update
        except BackboneError:
            self._kv = None
            raise

    @staticmethod
    def _decode(change: KvChange) -> RegistryUpdate | None:
        service, _, instance = change.key.partition(".")
        if change.value is None:
            return Delete(service, instance)
        try:
            record = InstanceRecord.model_validate_json(change.value)
        except ValidationError:
            return None  # not ours to understand; a newer writer perhaps
        return Put(record, age=change.age)

    async def aclose(self) -> None:
        self._kv = None
