"""An instance's live configuration: its service's bucket, watched by push, kept in memory.

The snapshot is loaded before the app's startup runs, so ``shoal.config()`` works in
startup handlers; changes arrive on an ordered push consumer (``watch_bucket``)
within milliseconds. While NATS is away the last values stay (static stability);
once it is back a fresh snapshot replaces them and only real differences are
reported. A value that does not fit a model the app asked for (``shoal.config(Model)``)
is refused by this instance: the last good value stays and the refusal is logged.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import nats.js.errors
from pydantic import BaseModel, ValidationError

from shoal.backbone._connection import Backbone
from shoal.backbone._follower import BucketFollower
from shoal.backbone._kv import KvChange
from shoal.config._crypto import (
    APP_KEY_FILE,
    decode_key,
    decrypt,
    derive_key,
    load_or_create_app_key,
)
from shoal.config._frozen import freeze
from shoal.config._layout import CONFIG_PREFIX, MANIFEST, OVERRIDE, SECRET_PREFIX, bucket_name
from shoal.exceptions import ConfigError, ShoalError

__all__ = ["ChangeCallback", "LiveConfig", "describe_errors", "instance_key"]

log = logging.getLogger("shoal.config")

ChangeCallback = Callable[[Mapping[str, Any], frozenset[str]], Any]
M = TypeVar("M", bound=BaseModel)
_MISSING = object()


def describe_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


class _Layers:
    def __init__(self) -> None:
        self.manifest: dict[str, Any] = {}
        self.override: dict[str, Any] = {}
        self.secrets: dict[str, bytes] = {}

    def merged(self) -> dict[str, Any]:
        return {**self.manifest, **self.override}


class LiveConfig(BucketFollower[_Layers]):
    """The configuration and secrets of one instance of ``service``."""

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        instance: str,
        *,
        secret_key: bytes | None = None,
        callbacks: list[ChangeCallback] | None = None,
        retry_delay: float = 0.2,
    ) -> None:
        super().__init__(backbone, bucket_name(app, service), retry_delay=retry_delay)
        self.app, self.service, self.instance = app, service, instance
        self.what = f"the configuration of service {service!r}"
        self._key = secret_key
        self._callbacks = callbacks if callbacks is not None else []
        self._layers = _Layers()
        self._values: dict[str, Any] = {}
        self._view: Mapping[str, Any] = MappingProxyType(self._values)
        self._models: dict[type[BaseModel], BaseModel] = {}
        self._refused: dict[str, str] = {}  # the value last refused (and logged), per key
        self._missing = False
        self._failed = ""  # the watch failure last logged
        self._pending: set[asyncio.Task[Any]] = set()

    # -- reading (no I/O) ------------------------------------------------------------

    @property
    def values(self) -> Mapping[str, Any]:
        """The current values, read-only (a new mapping after each change)."""
        return self._view

    def model(self, model: type[M]) -> M:
        """The current values validated into ``model``; from now on values it refuses are
        refused by this instance. ConfigError if the current values do not fit."""
        found = self._models.get(model)
        if found is None:
            try:
                found = model.model_validate(self._values)
            except ValidationError as exc:
                raise ConfigError(
                    f"the config of service {self.service!r} does not fit {model.__name__}: "
                    f"{describe_errors(exc)}; fix shoal.yaml or run "
                    f"`shoal config set {self.service} KEY=VALUE`"
                ) from exc
            self._models[model] = found
        assert isinstance(found, model)
        return found

    def secret(self, name: str) -> str:
        sealed = self._layers.secrets.get(name)
        if sealed is None:
            raise ConfigError(
                f"service {self.service!r} has no secret {name!r}; set it with "
                f"`shoal secret set {self.service} {name}`"
            )
        if self._key is None:
            raise ConfigError(
                f"instance {self.instance} of service {self.service!r} has no secret key: "
                "run it with `shoal up` (the supervisor hands each instance its service's key)"
            )
        return decrypt(self._key, self.app, self.service, name, sealed)

    def secret_names(self) -> list[str]:
        return sorted(self._layers.secrets)

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        await super().aclose()
        for pending in list(self._pending):
            pending.cancel()

    # -- following the bucket --------------------------------------------------------

    async def _ensure(self) -> object:
        try:
            return await self._backbone.js.stream_info(f"KV_{self.bucket}")
        except nats.js.errors.NotFoundError:
            self._missing = True  # the supervisor has not made it (yet): empty, retried
            raise

    def _watch_failed(self, exc: ShoalError) -> float:
        if self._missing:
            self._missing = False
            if not self._synced.is_set():
                log.info("no config bucket %s yet: the config is empty", self.bucket)
                self._synced.set()
            return max(self._retry_delay, 1.0)
        if str(exc) != self._failed:
            self._failed = str(exc)
            log.warning("config watch of %s failed: %s; retrying", self.service, exc)
        return self._retry_delay

    def _new_snapshot(self) -> _Layers:
        return _Layers()

    def _apply(self, change: KvChange) -> None:
        layers = _Layers()
        layers.manifest = dict(self._layers.manifest)
        layers.override = dict(self._layers.override)
        layers.secrets = dict(self._layers.secrets)
        self._stage(layers, change)
        self._install(layers)

    # -- applying --------------------------------------------------------------------

    def _stage(self, layers: _Layers, change: KvChange) -> None:
        if change.key.startswith(SECRET_PREFIX):
            name = change.key[len(SECRET_PREFIX) :]
            if change.value is None:
                layers.secrets.pop(name, None)
            else:
                layers.secrets[name] = change.value
            return
        source, _, key = change.key.removeprefix(CONFIG_PREFIX).partition(".")
        layer = {MANIFEST: layers.manifest, OVERRIDE: layers.override}.get(source)
        if layer is None or not key:
            return  # not ours to understand
        if change.value is None:
            layer.pop(key, None)
            return
        try:
            layer[key] = freeze(json.loads(change.value))
        except ValueError:
            log.warning("config of %s: %s in %s is not JSON; ignored", self.service, key, source)

    def _install(self, layers: _Layers) -> None:
        secrets_changed = layers.secrets != self._layers.secrets
        self._check_secrets(layers.secrets)
        self._layers = layers
        wanted = layers.merged()
        changed = sorted(
            k
            for k in wanted.keys() | self._values.keys()
            if wanted.get(k, _MISSING) != self._values.get(k, _MISSING)
        )
        accepted = self._accept_changes(wanted, changed)
        first = not self._synced.is_set()  # the values the app starts with: not a change
        self._synced.set()
        if accepted:
            self._view = MappingProxyType(self._values)
            if not first:
                self._notify(frozenset(accepted))
        self._failed = ""  # the watch works: a new failure is worth a line again
        if accepted or secrets_changed:
            self._bump()

    def _accept_changes(self, wanted: dict[str, Any], changed: list[str]) -> list[str]:
        """Take ``wanted`` whole if every model takes it; else key by key, refusing the
        values a model rejects. Returns the keys taken."""
        if changed and isinstance(self._validate(wanted), dict):
            self._take(wanted, changed)
            return changed
        return [key for key in changed if self._accept(key, wanted.get(key, _MISSING))]

    def _validate(
        self, trial: dict[str, Any]
    ) -> dict[type[BaseModel], BaseModel] | tuple[type[BaseModel], ValidationError]:
        validated: dict[type[BaseModel], BaseModel] = {}
        for model in self._models:
            try:
                validated[model] = model.model_validate(trial)
            except ValidationError as exc:
                return model, exc
        return validated

    def _take(self, trial: dict[str, Any], keys: list[str]) -> None:
        validated = self._validate(trial)
        assert isinstance(validated, dict)
        self._values = trial
        self._models.update(validated)
        for key in keys:
            self._refused.pop(key, None)

    def _accept(self, key: str, value: object) -> bool:
        trial = dict(self._values)
        if value is _MISSING:
            trial.pop(key, None)
        else:
            trial[key] = value
        outcome = self._validate(trial)
        if isinstance(outcome, dict):
            self._take(trial, [key])
            return True
        model, exc = outcome
        shown = "(removed)" if value is _MISSING else json.dumps(value)
        if self._refused.get(key) != shown:  # said once; it is tried again at each change
            self._refused[key] = shown
            log.error(
                "config of service %s, instance %s: refused %s=%s: %s (model %s); "
                "keeping the last good value %s",
                self.service,
                self.instance,
                key,
                shown,
                describe_errors(exc),
                model.__name__,
                json.dumps(self._values.get(key)),
            )
        return False

    def _check_secrets(self, secrets: dict[str, bytes]) -> None:
        for name, sealed in secrets.items():
            if self._key is None or self._layers.secrets.get(name) == sealed:
                continue
            try:
                decrypt(self._key, self.app, self.service, name, sealed)
            except ConfigError as exc:
                log.error("instance %s: %s", self.instance, exc)

    def _notify(self, changed: frozenset[str]) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(self._view, changed)
            except Exception:
                log.exception("config change callback %r of %s failed", callback, self.service)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "config change callback of %s failed",
                self.service,
                exc_info=task.exception(),
            )


def instance_key(app: str, service: str, given: str | None, app_dir: Path) -> bytes | None:
    """The service key from the supervisor's pipe; for an instance started by hand in the
    app's directory, derived from the app key there if one exists; else None."""
    if given:
        try:
            return decode_key(given)
        except ValueError as exc:
            raise ConfigError(f"unreadable secret key from the supervisor: {exc}") from exc
    path = app_dir / ".shoal" / APP_KEY_FILE
    if not path.is_file():
        return None
    return derive_key(load_or_create_app_key(path.parent), app, service)
