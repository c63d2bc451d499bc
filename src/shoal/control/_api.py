"""The control API: HTTP on loopback, every request needs the app's bearer token.

GET  /v1/status    app, ready or not, URLs
GET  /v1/ps        one row per instance
POST /v1/scale     {"service": S, "replicas": N}
POST /v1/restart   {"service": S}     (rolling; answers when done)
POST /v1/apply     re-read shoal.yaml, apply its traffic policy live
                   (200 {"changed", "not_applied"}; 422 {"error", "problems"} if invalid)
POST /v1/ca/rotate roll the app's root CA under load (answers when done, with each step)
GET  /v1/ca        the CA's certificates and their expiry, issued and refused counts
GET  /v1/traces    recent traces, newest first (?service=&errors=1&min_ms=&limit=)
GET  /v1/traces/ID one trace's spans, in start order
GET  /v1/policies  the traffic and authorization policies in force, the gateway's routes
GET  /v1/failures  recent failed spans the mesh explained (shoal.reason), newest first
GET  /v1/events    event streams, consumers, dead letters; POST /v1/events/replay sends
                   dead letters back to their subscriber (see shoal.events._control)
POST /v1/dashboard/ticket  a one-time dashboard login link (see _dashboard.py; the page's
                   session cookie admits GETs only)
POST /v1/down      stop the app gracefully (answers 202 first)
/v1/config/..., /v1/secrets/...   `shoal config` and `shoal secret` (see _config_api.py)
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from shoal._asgi import read_body, send_json
from shoal.control._config_api import CONFIG_PREFIXES, config_route
from shoal.control._dashboard import Dashboard
from shoal.control._telemetry_api import TELEMETRY_GETS, Query, Text, send_text
from shoal.events._control import events_route
from shoal.exceptions import ManifestError, ShoalError
from shoal.types import Receive, Scope, Send

if TYPE_CHECKING:  # the supervisor package imports this module
    from shoal.supervisor._supervisor import Supervisor

__all__ = ["ControlAPI"]


class ControlAPI:
    def __init__(
        self, supervisor: Supervisor, token: str, on_down: Callable[[], None], urls: dict[str, str]
    ) -> None:
        self.supervisor = supervisor
        self._token = f"Bearer {token}".encode()
        self._on_down = on_down
        self.urls = urls
        self.dashboard = Dashboard(urls.get("control", ""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        bearer = hmac.compare_digest(headers.get(b"authorization", b""), self._token)
        if await self.dashboard.handle(scope, send, bearer=bearer):
            return
        if not (bearer or self.dashboard.admits(scope)):  # the page's cookie: GETs only
            await send_json(
                send, 401, {"error": "missing or wrong token (see .shoal/control.json)"}
            )
            return
        body = await read_body(receive)
        try:
            data = json.loads(body) if body else {}
            handler = TELEMETRY_GETS.get(_first_segments(scope["path"]))
            if scope["method"] == "GET" and handler is not None:
                query = Query(parse_qs(scope.get("query_string", b"").decode("latin-1")))
                status, payload = await handler(self.supervisor, scope["path"], query)
            else:
                status, payload = await self._route(scope["method"], scope["path"], data)
        except ShoalError as exc:
            status, payload = 400, {"error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 400, {"error": f"bad request: {exc}"}
        if isinstance(payload, Text):
            await send_text(send, status, payload)
        else:
            await send_json(send, status, payload)

    async def _route(self, method: str, path: str, data: dict[str, Any]) -> tuple[int, Any]:
        sup = self.supervisor
        if path.startswith(CONFIG_PREFIXES):
            return await config_route(sup.config_admin, method, path, data)
        if (method, path) == ("GET", "/v1/status"):
            pending = sup.not_ready()
            return 200, {
                "app": sup.app,
                "ready": not pending,
                "not_ready": [row for row in sup.ps() if row["health"] != "ready"],
                **self.urls,
            }
        if (method, path) == ("GET", "/v1/ps"):
            return 200, sup.ps()
        if (method, path) == ("POST", "/v1/scale"):
            await sup.scale(str(data["service"]), int(data["replicas"]))
            return 200, [r for r in sup.ps() if r["service"] == data["service"]]
        if (method, path) == ("POST", "/v1/restart"):
            await sup.restart(str(data["service"]))
            return 200, [r for r in sup.ps() if r["service"] == data["service"]]
        if (method, path) == ("POST", "/v1/apply"):
            try:
                result = await sup.apply()
            except ManifestError as exc:
                count = len(exc.problems)
                error = (
                    f"{count} problem{'s' if count != 1 else ''} in {sup.manifest.path}: "
                    "nothing applied; the traffic policy in force stays"
                )
                return 422, {"error": error, "problems": [str(p) for p in exc.problems]}
            return 200, result.to_json()
        if (method, path) == ("POST", "/v1/ca/rotate"):
            return 200, await sup.rotate_ca()
        if (method, path) == ("GET", "/v1/ca"):
            return 200, sup.ca_status()
        if path.startswith("/v1/events"):
            return await events_route(sup.backbone, sup.app, method, path, data)
        if (method, path) == ("POST", "/v1/down"):
            asyncio.get_running_loop().call_later(0.05, self._on_down)
            return 202, {"stopping": sup.app}
        return 404, {"error": f"no such endpoint: {method} {path}"}


def _first_segments(path: str) -> str:
    """``/v1/traces/abc`` -> ``/v1/traces``: the key of :data:`TELEMETRY_GETS`."""
    return "/".join(path.split("/", 3)[:3])
