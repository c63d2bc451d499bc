"""What a service author calls: ``shoal.config()``, ``shoal.on_config_change``, ``shoal.secret``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from shoal.config._runtime import ChangeCallback, LiveConfig
from shoal.exceptions import ConfigError

__all__ = ["config", "current_config", "on_config_change", "secret", "set_current_config"]

M = TypeVar("M", bound=BaseModel)

_live: LiveConfig | None = None
_callbacks: list[ChangeCallback] = []
"""Registered by the app, perhaps at import time, before the runtime has loaded the config."""


def current_config() -> LiveConfig | None:
    return _live


def set_current_config(live: LiveConfig | None) -> None:
    global _live
    _live = live


def change_callbacks() -> list[ChangeCallback]:
    """The process's callbacks (the runtime's ``LiveConfig`` calls them)."""
    return _callbacks


def _require(what: str) -> LiveConfig:
    if _live is None:
        raise ConfigError(
            f"{what} works inside a service instance run by `shoal up` or `shoal serve`, from "
            "the app's startup on; here there is none (in tests, serve the app with "
            "`shoal serve` or pass the values to your code directly)"
        )
    return _live


@overload
def config() -> Mapping[str, Any]: ...
@overload
def config(model: type[M]) -> M: ...
def config(model: type[M] | None = None) -> Mapping[str, Any] | M:
    """This service's current configuration: ``shoal.yaml``'s ``config:`` with the live
    overrides of `shoal config set` on top.

    Without ``model``: a read-only mapping (a new one after each change). With a pydantic
    model: the values validated into it; from then on this instance refuses a live
    value that the model rejects (the last good value stays, and the refusal is logged).
    Raises :class:`~shoal.ConfigError` outside a service instance, or if the current
    values do not fit ``model``.
    """
    live = _require("shoal.config()")
    return live.values if model is None else live.model(model)


def on_config_change(callback: ChangeCallback) -> ChangeCallback:
    """Call ``callback(values, changed_keys)`` after each change this instance accepts.

    ``callback`` may be a plain function or a coroutine function (run as a task). Usable
    as a decorator, at import time too; returns ``callback``.
    """
    if not callable(callback):
        raise ConfigError(f"on_config_change needs a callable, got {callback!r}")
    _callbacks.append(callback)
    return callback


def secret(name: str) -> str:
    """The secret ``name`` of this service (set with `shoal secret set SERVICE NAME`).

    Raises :class:`~shoal.ConfigError`, naming the service and the secret, when it is
    absent, cannot be decrypted, or outside a service instance.
    """
    return _require("shoal.secret()").secret(name)
