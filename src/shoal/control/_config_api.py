"""The control API's config and secret endpoints (the supervisor holds the admin backbone).

GET    /v1/config/SERVICE/values[/KEY]    current values and their source (manifest, override)
POST   /v1/config/SERVICE/values          {"values": {KEY: VALUE, ...}}: override live
DELETE /v1/config/SERVICE/values/KEY      remove the override (the manifest's value is back)
GET    /v1/config/SERVICE/history[/KEY]   every change kept, oldest first
GET    /v1/secrets/SERVICE                names, revisions and times (never values)
PUT    /v1/secrets/SERVICE/NAME           {"value": "..."}: stored encrypted
DELETE /v1/secrets/SERVICE/NAME           purged with its earlier revisions
"""

from __future__ import annotations

from typing import Any

from shoal.config._admin import ConfigAdmin
from shoal.exceptions import ShoalError

__all__ = ["CONFIG_PREFIXES", "config_route"]

CONFIG_PREFIXES = ("/v1/config/", "/v1/secrets/")


async def config_route(
    admin: ConfigAdmin | None, method: str, path: str, data: dict[str, Any]
) -> tuple[int, Any]:
    if admin is None:
        raise ShoalError("the app is still starting; try again in a moment")
    kind, _, rest = path.removeprefix("/v1/").partition("/")
    parts = rest.split("/")
    if kind == "secrets":
        return await _secrets(admin, method, parts, data)
    service, what, key = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
    if len(key) > 1 or not service:
        return _missing(method, path)
    one = key[0] if key else None
    if what == "values" and method == "GET":
        return 200, await admin.get(service, one)
    if what == "values" and method == "POST" and one is None:
        values = data["values"]
        if not isinstance(values, dict):
            raise ShoalError('expected {"values": {KEY: VALUE, ...}}')
        return 200, await admin.set(service, values)
    if what == "values" and method == "DELETE" and one is not None:
        return 200, await admin.unset(service, one)
    if what == "history" and method == "GET":
        return 200, await admin.history(service, one)
    return _missing(method, path)


async def _secrets(
    admin: ConfigAdmin, method: str, parts: list[str], data: dict[str, Any]
) -> tuple[int, Any]:
    if len(parts) == 1 and method == "GET":
        return 200, await admin.secrets(parts[0])
    if len(parts) == 2 and method == "PUT":
        value = data["value"]
        if not isinstance(value, str):
            raise ShoalError('expected {"value": "..."}')
        return 200, await admin.set_secret(parts[0], parts[1], value)
    if len(parts) == 2 and method == "DELETE":
        return 200, await admin.delete_secret(parts[0], parts[1])
    return _missing(method, "/v1/secrets/" + "/".join(parts))


def _missing(method: str, path: str) -> tuple[int, Any]:
    return 404, {"error": f"no such endpoint: {method} {path}"}
