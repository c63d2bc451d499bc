"""Inbound ASGI middleware: the reserved ``/.shoal/`` admin paths, the instance header,
and the mesh's inbound guard (deadlines, rate limits, load shedding) around the app."""

from __future__ import annotations

from shoal._asgi import send_json
from shoal.manifest._policy import DEFAULT_POLICY, LimitsPolicy, ServicePolicy
from shoal.mesh._guard import InboundGuard
from shoal.mesh._metrics import ServerTimer, exposition
from shoal.mesh._peer import peer_of
from shoal.mesh._policies import PolicySource
from shoal.mesh._tracing import server_span
from shoal.registry._records import InstanceRecord
from shoal.runtime._context import current_policies
from shoal.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ADMIN_PREFIX", "INSTANCE_HEADER", "METRICS_PATH", "Inbound", "InstanceStatus"]

ADMIN_PREFIX = "/.shoal/"
METRICS_PATH = "/.shoal/metrics"
_CALLER = b"shoal-caller"
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
INSTANCE_HEADER = b"shoal-instance"
_REASON = b"shoal-reason"


class InstanceStatus:
    """What this instance says about itself: its record and whether it takes traffic."""

    def __init__(self, record: InstanceRecord) -> None:
        self.record = record

    @property
    def state(self) -> str:
        return self.record.state

    def set_state(self, state: str) -> InstanceRecord:
        self.record = self.record.model_copy(update={"state": state})
        return self.record


class _ProcessPolicies:
    """The serving process's live policies, looked up per request (they arrive later)."""

    def get(self, service: str) -> ServicePolicy:
        policies = current_policies()
        return policies.get(service) if policies is not None else DEFAULT_POLICY


class _GatewayPolicies:
    """The gateway forwards; the services behind it shed their own load."""

    _policy = ServicePolicy(limits=LimitsPolicy(adaptive=False))

    def get(self, service: str) -> ServicePolicy:
        return self._policy


class Inbound:
    """Wraps the user's ASGI app; answers ``/.shoal/live`` and ``/.shoal/ready`` itself."""

    def __init__(
        self,
        app: ASGIApp,
        status: InstanceStatus,
        *,
        policies: PolicySource | None = None,
        authenticate: bool = False,
    ) -> None:
        service = status.record.service
        if policies is None:
            policies = _GatewayPolicies() if service == "gateway" else _ProcessPolicies()
        self.guard = InboundGuard(app, service, policies, authenticate=authenticate)
        self.app: ASGIApp = self.guard
        self.status = status
        self.service = service
        self._header = (INSTANCE_HEADER, status.record.instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(ADMIN_PREFIX):
            await self._admin(scope, send)
            return
        header = self._header
        peer = peer_of(scope)
        caller = peer.service if peer is not None else _claimed_caller(scope)
        span = server_span(scope, self.service, caller or None)
        timer = ServerTimer(self.service)

        async def send_with_instance(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                # A proxy (the gateway) passes on the instance that really answered.
                if not any(name.lower() == INSTANCE_HEADER for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
                span.status = message["status"]
                for name, value in headers:
                    if name == _REASON:
                        span.reason = value.decode("latin-1")
            await send(message)

        inner = span.forward(scope)  # our own copy: the app's router notes its route in it
        try:
            await self.app(inner, receive, send_with_instance)
        except BaseException as exc:
            span.end(exc)
            timer.done(_route(inner), scope["method"], span.status or 500, caller, span.reason)
            raise
        span.end()
        timer.done(_route(inner), scope["method"], span.status, caller, span.reason)

    async def _admin(self, scope: Scope, send: Send) -> None:
        if scope["path"] == METRICS_PATH and self.service != "gateway":
            await _send_metrics(send, self._header)
            return
        path = scope["path"][len(ADMIN_PREFIX) :]
        record = self.status.record
        if path == "live":
            status, body = 200, {"status": "live", "instance": record.instance}
        elif path == "ready":
            ready = record.state == "ready"
            status, body = (200 if ready else 503), {"status": record.state}
        elif path == "info" and record.service != "gateway":  # the gateway faces outside
            status, body = 200, record.model_dump(mode="json")
        else:
            status, body = 404, {"error": f"no admin endpoint {scope['path']!r}"}
        await send_json(send, status, body, [self._header])


def _claimed_caller(scope: Scope) -> str:
    """The caller a request names in ``shoal-caller`` (not proven: plaintext mode only)."""
    for name, value in scope["headers"]:
        if name == _CALLER:
            return str(value.decode("latin-1"))
    return ""


def _route(scope: Scope) -> str:
    """The route template the app's router matched (Starlette, FastAPI), else ``""``."""
    route = scope.get("route")
    path: object = getattr(route, "path", None)
    return path if isinstance(path, str) else ""


async def _send_metrics(send: Send, *headers: tuple[bytes, bytes]) -> None:
    body = exposition()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", _METRICS_TYPE),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
