"""The admin side of configuration: the buckets, the manifest's layer, overrides, history, secrets.

Used by the supervisor (the admin NATS user); instances only read (``_runtime``).
Every value is stored as JSON; secrets are stored as ciphertext made by ``_crypto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import nats.errors
from nats.js import api
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shoal.backbone._connection import Backbone
from shoal.backbone._kv import open_bucket
from shoal.config._layout import (
    CONFIG_PREFIX,
    HISTORY,
    MANIFEST,
    OVERRIDE,
    SECRET_PREFIX,
    bucket_name,
)
from shoal.exceptions import BackboneError

__all__ = ["ConfigStore", "encode_value"]

_DRAIN = 5.0


def encode_value(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class ConfigStore:
    """Reads and writes the config buckets of one app."""

    def __init__(self, backbone: Backbone, app: str, *, op_timeout: float = 5.0) -> None:
        self._backbone = backbone
        self.app = app
        self._op_timeout = op_timeout
        self._kvs: dict[str, KeyValue] = {}

    async def bucket(self, service: str) -> KeyValue:
        """``service``'s bucket, created (with history) if it does not exist."""
        kv = self._kvs.get(service)
        if kv is None:
            kv = await self._guard(
                f"open {bucket_name(self.app, service)}",
                open_bucket(
                    self._backbone,
                    api.KeyValueConfig(
                        bucket=bucket_name(self.app, service),
                        description=f"shoal config and secrets of {self.app}/{service}",
                        history=HISTORY,
                        storage=api.StorageType.FILE,
                    ),
                ),
            )
            self._kvs[service] = kv
        return kv

    async def _guard(self, what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self._op_timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._kvs.clear()
            raise BackboneError(f"could not {what}: {exc or type(exc).__name__}") from exc

    async def entries(self, service: str, pattern: str, *, history: bool = False) -> list[Any]:
        """The entries under ``pattern`` (live ones, or every revision), oldest first."""
        kv = await self.bucket(service)

        async def read() -> list[Any]:
            watcher = await kv.watch(pattern, include_history=history)
            found: list[Any] = []
            try:
                while (entry := await watcher.updates(_DRAIN)) is not None:  # type: ignore[no-untyped-call]
                    found.append(entry)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
            return found

        return list(await self._guard(f"read {bucket_name(self.app, service)}", read()))

    # -- config ----------------------------------------------------------------------

    async def layer(self, service: str, source: str) -> dict[str, Any]:
        """The live values of one layer (``manifest`` or ``override``)."""
        prefix = f"{CONFIG_PREFIX}{source}."
        values: dict[str, Any] = {}
        for entry in await self.entries(service, f"{prefix}>"):
            if entry.operation not in (KV_DEL, KV_PURGE) and entry.value is not None:
                values[entry.key[len(prefix) :]] = json.loads(entry.value)
        return values

    async def publish_manifest(self, service: str, values: Mapping[str, Any]) -> list[str]:
        """Make the manifest layer hold exactly ``values``; returns the keys changed."""
        stored = await self.layer(service, MANIFEST)
        kv = await self.bucket(service)
        changed = sorted(
            {k for k, v in values.items() if k not in stored or stored[k] != v}
            | (stored.keys() - values.keys())
        )
        for key in changed:
            subject = f"{CONFIG_PREFIX}{MANIFEST}.{key}"
            if key in values:
                await self._guard(f"write {key}", kv.put(subject, encode_value(values[key])))
            else:
                await self._guard(f"delete {key}", kv.delete(subject))
        return changed

    async def set(self, service: str, values: Mapping[str, Any]) -> dict[str, int]:
        """Override ``values``; returns each key's new revision."""
        kv = await self.bucket(service)
        revisions: dict[str, int] = {}
        for key, value in values.items():
            subject = f"{CONFIG_PREFIX}{OVERRIDE}.{key}"
            revisions[key] = await self._guard(f"set {key}", kv.put(subject, encode_value(value)))
        return revisions

    async def unset(self, service: str, key: str) -> bool:
        """Remove the override of ``key``; False if there was none."""
        if key not in await self.layer(service, OVERRIDE):
            return False
        kv = await self.bucket(service)
        await self._guard(f"unset {key}", kv.delete(f"{CONFIG_PREFIX}{OVERRIDE}.{key}"))
        return True

    async def current(self, service: str) -> dict[str, tuple[Any, str]]:
        """Each key's current value and where it comes from (the override wins)."""
        result: dict[str, tuple[Any, str]] = {
            key: (value, MANIFEST) for key, value in (await self.layer(service, MANIFEST)).items()
        }
        for key, value in (await self.layer(service, OVERRIDE)).items():
            result[key] = (value, OVERRIDE)
        return dict(sorted(result.items()))

    async def history(self, service: str, key: str | None = None) -> list[dict[str, Any]]:
        """Every change kept (64 revisions a key), oldest first."""
        pattern = f"{CONFIG_PREFIX}*.{key}" if key else f"{CONFIG_PREFIX}>"
        rows: list[dict[str, Any]] = []
        for entry in await self.entries(service, pattern, history=True):
            _, source, name = entry.key.split(".", 2)
            deleted = entry.operation in (KV_DEL, KV_PURGE)
            rows.append(
                {
                    "revision": entry.revision,
                    "time": entry.created.timestamp() if entry.created else None,
                    "key": name,
                    "source": source,
                    "operation": "unset" if deleted else "set",
                    "value": None if deleted or not entry.value else json.loads(entry.value),
                }
            )
        return sorted(rows, key=lambda row: row["revision"])

    # -- secrets ---------------------------------------------------------------------

    async def put_secret(self, service: str, name: str, sealed: bytes) -> int:
        kv = await self.bucket(service)
        return int(await self._guard(f"store secret {name}", kv.put(SECRET_PREFIX + name, sealed)))

    async def secrets(self, service: str) -> list[dict[str, Any]]:
        """Each stored secret's name, revision and time; never a value."""
        rows = []
        for entry in await self.entries(service, f"{SECRET_PREFIX}>"):
            if entry.operation in (KV_DEL, KV_PURGE):
                continue
            rows.append(
                {
                    "name": entry.key[len(SECRET_PREFIX) :],
                    "revision": entry.revision,
                    "time": entry.created.timestamp() if entry.created else None,
                }
            )
        return sorted(rows, key=lambda row: row["name"])

    async def delete_secret(self, service: str, name: str) -> bool:
        """Purge the secret and every earlier revision of it; False if there was none."""
        if name not in {row["name"] for row in await self.secrets(service)}:
            return False
        kv = await self.bucket(service)
        await self._guard(f"delete secret {name}", kv.purge(SECRET_PREFIX + name))
        return True

    def forget(self) -> None:
        """Drop the bound buckets (after NATS restarted, say)."""
        self._kvs.clear()
