"""``services.<name>.config:``: a service's configuration values, checked where written.

Keys follow the config layout (``shoal.config._layout``): letters, digits, ``_`` and
``-``; values are JSON (string, number, true/false, list, map). A version entry
(``service: catalog``) runs the same service, so it shares the service's config:
``config:`` goes under the service's own entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StrictStr

from shoal.config._layout import check_json, key_problem
from shoal.manifest._checks import Extra, problem

__all__ = ["ConfigMap", "config_extras"]


def _check_key(key: str) -> str:
    found = key_problem("config key", key)
    if found:
        raise problem(found, at_key=True)
    return key


def _check_value(value: object) -> object:
    found = check_json(value)
    if found:
        raise problem(found)
    return value


ConfigKey = Annotated[StrictStr, AfterValidator(_check_key)]
ConfigValue = Annotated[Any, BeforeValidator(_check_value)]
ConfigMap = dict[ConfigKey, ConfigValue]


def config_extras(data: Mapping[object, object]) -> list[Extra]:
    """A version entry may not carry ``config:``: it shares its service's."""
    target = data.get("service")
    if target is None or "config" not in data:
        return []
    owner = target if isinstance(target, str) else "its service"
    message = (
        f"config for service {owner!r} goes under its own entry {owner!r}: "
        "version entries share their service's config"
    )
    return [(("config",), message, True)]
