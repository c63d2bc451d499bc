"""The supervisor's side: the manifest's values published, checked commands, service keys.

Every command names a mesh service of the running manifest (an unknown one is an
error listing them); keys and secret names are checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.backbone._connection import Backbone
from shoal.config._crypto import derive_key, encode_key, encrypt, load_or_create_app_key
from shoal.config._layout import check_json, key_problem
from shoal.config._store import ConfigStore, encode_value
from shoal.exceptions import ConfigError
from shoal.manifest import Manifest

__all__ = ["ConfigAdmin", "manifest_config"]

_GATEWAY = "gateway"
_MAX_SECRET = 64 * 1024
_MAX_VALUE = 256 * 1024


def manifest_config(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Each mesh service's ``config:`` (version entries share their service's)."""
    services = manifest.services.items()
    found = {name: dict(spec.config) for name, spec in services if not spec.service}
    if manifest.gateway is not None:
        found.setdefault(_GATEWAY, {})
    return found


class ConfigAdmin:
    """What `shoal config` and `shoal secret` do, through the control API."""

    def __init__(
        self,
        backbone: Backbone,
        manifest: Manifest,
        state_dir: Path,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.app = manifest.app
        self.store = ConfigStore(backbone, manifest.app)
        self._services = manifest_config(manifest)
        self._app_key = load_or_create_app_key(state_dir)
        self._say = say

    def service_key(self, service: str) -> str:
        """``service``'s secret key (base64), for its instances' bootstrap pipe only."""
        return encode_key(derive_key(self._app_key, self.app, service))

    async def publish(self, manifest: Manifest) -> list[str]:
        """Write every service's manifest values (creating buckets); returns services changed."""
        self._services = manifest_config(manifest)
        changed = []
        for service, values in sorted(self._services.items()):
            keys = await self.store.publish_manifest(service, values)
            if keys:
                changed.append(service)
                self._say(f"config of {service} from shoal.yaml: {', '.join(keys)}")
        return changed

    def _service(self, service: str) -> str:
        if service not in self._services:
            known = ", ".join(sorted(self._services)) or "none"
            raise ConfigError(f"no service {service!r} in app {self.app!r} (services: {known})")
        return service

    @staticmethod
    def _key(what: str, key: str) -> str:
        problem = key_problem(what, key)
        if problem:
            raise ConfigError(problem)
        return key

    async def get(self, service: str, key: str | None = None) -> dict[str, Any]:
        current = await self.store.current(self._service(service))
        if key is not None:
            self._key("config key", key)
            if key not in current:
                known = ", ".join(current) or "none"
                raise ConfigError(f"service {service!r} has no config key {key!r} (keys: {known})")
            current = {key: current[key]}
        return {k: {"value": v, "source": source} for k, (v, source) in current.items()}

    async def set(self, service: str, values: Mapping[str, Any]) -> dict[str, Any]:
        self._service(service)
        if not values:
            raise ConfigError("nothing to set: give KEY=VALUE")
        for key, value in values.items():
            self._key("config key", key)
            problem = check_json(value)
            if problem:
                raise ConfigError(f"{key}: {problem}")
            if len(encode_value(value)) > _MAX_VALUE:
                raise ConfigError(f"{key}: the value is larger than 256 KiB (as JSON)")
        revisions = await self.store.set(service, values)
        self._say(f"config of {service} set: {', '.join(values)}")
        return {"service": service, "revisions": revisions}

    async def unset(self, service: str, key: str) -> dict[str, Any]:
        self._service(service)
        self._key("config key", key)
        if not await self.store.unset(service, key):
            raise ConfigError(f"service {service!r} has no override of {key!r} to unset")
        self._say(f"config of {service}: override of {key} removed")
        current = await self.store.current(service)
        value, source = current.get(key, (None, None))
        return {"service": service, "key": key, "value": value, "source": source}

    async def history(self, service: str, key: str | None = None) -> list[dict[str, Any]]:
        self._service(service)
        if key is not None:
            self._key("config key", key)
        return await self.store.history(service, key)

    async def set_secret(self, service: str, name: str, value: str) -> dict[str, Any]:
        self._service(service)
        self._key("secret", name)
        if not value:
            raise ConfigError(f"the secret {name!r} is empty: give a value")
        if len(value.encode()) > _MAX_SECRET:
            raise ConfigError(f"the secret {name!r} is larger than 64 KiB")
        key = derive_key(self._app_key, self.app, service)
        revision = await self.store.put_secret(
            service, name, encrypt(key, self.app, service, name, value)
        )
        self._say(f"secret {name} of {service} set")
        return {"service": service, "name": name, "revision": revision}

    async def secrets(self, service: str) -> list[dict[str, Any]]:
        return await self.store.secrets(self._service(service))

    async def delete_secret(self, service: str, name: str) -> dict[str, Any]:
        self._service(service)
        self._key("secret", name)
        if not await self.store.delete_secret(service, name):
            raise ConfigError(f"service {service!r} has no secret {name!r}")
        self._say(f"secret {name} of {service} deleted")
        return {"service": service, "name": name, "deleted": True}
