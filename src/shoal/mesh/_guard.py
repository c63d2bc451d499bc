"""Inbound protection of an instance: authorization, deadlines, rate limits, load shedding.

Wraps the user's app inside ``shoal serve``. For each request, in order:

1. with ``authenticate`` (the instance serves mTLS): the path is normalised once
   (``shoal.mesh._paths``; a path refused outright → 400 ``bad-path``), the
   authenticated caller (``shoal.peer`` in the scope, set by the mTLS listener)
   is checked against the service's authorization policy (``authz``) → 403
   ``denied:<rule>``, logged on ``shoal.mesh.authz``; the app is then given the
   normalised path that was checked, never the one as sent;
2. a rate limit per caller service (``limits.rate``; the authenticated caller
   with ``authenticate``, else the caller named in ``shoal-caller``) → 429
   ``rate-limited`` with ``Retry-After``;
3. a request whose ``shoal-timeout`` says no time is left → 504
   ``deadline-exceeded``, before the app runs;
4. the adaptive concurrency limit (``limits.adaptive``) → 503 ``overloaded``
   with ``Retry-After`` for what is past it, so admitted requests keep their
   latency instead of every request queueing;
5. the app runs with the deadline in a contextvar (outbound calls inherit it);
   if it passes before the response starts, the app is cancelled and the
   caller gets 504 ``deadline-exceeded``; a mesh error the app lets escape
   (say, ``breaker-open`` from a call it made) is answered with its status and
   reason instead of a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from shoal._asgi import send_json
from shoal._throttle import Throttle
from shoal.exceptions import TransportError
from shoal.manifest._policy import DEFAULT_POLICY, ServicePolicy
from shoal.mesh import _deadline
from shoal.mesh._authz import authorize
from shoal.mesh._limiter import AdaptiveLimiter
from shoal.mesh._paths import PathRejectedError, encode_path, normalize_raw_path
from shoal.mesh._peer import Peer, peer_of
from shoal.mesh._policies import PolicySource
from shoal.mesh._ratelimit import CallerRateLimits
from shoal.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InboundGuard"]

_TIMEOUT = _deadline.TIMEOUT_HEADER.encode()
_CALLER = b"shoal-caller"
_REASON = b"shoal-reason"

logger = logging.getLogger("shoal.mesh.authz")

_WHY = {
    "denied:unauthenticated": "the caller has no mesh identity (no client certificate)",
    "denied:no-allow-match": "no allow rule for the service matches the request",
    "denied:default-policy": "no rule allows it and the app's default_policy is deny",
}


def _who(peer: Peer | None) -> str:
    return "an unauthenticated caller" if peer is None else f"service {peer.service!r}"


class _DenialLog:
    """Denials in the log: at most one line per reason per ``interval``, the rest counted."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = Throttle(interval, clock)

    def denied(self, reason: str, service: str, peer: Peer | None, method: str, path: str) -> None:
        held = self._throttle.admit(reason)
        if held is None:
            return
        who = _who(peer)
        more = f" ({held} more like it held back)" if held else ""
        logger.info("%s %r from %s to service %r: %s%s", method, path, who, service, reason, more)


class InboundGuard:
    def __init__(
        self,
        app: ASGIApp,
        service: str,
        policies: PolicySource | None = None,
        *,
        limiter: AdaptiveLimiter | None = None,
        authenticate: bool = False,
        log_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.service = service
        self.policies = policies
        self.limiter = limiter or AdaptiveLimiter()
        self.authenticate = authenticate
        self._denials = _DenialLog(log_interval, clock)
        self._rates: CallerRateLimits | None = None
        self._rate_policy: dict[str, float] | None = None

    def _policy(self) -> ServicePolicy:
        return self.policies.get(self.service) if self.policies is not None else DEFAULT_POLICY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policy()
        caller = ""
        if self.authenticate:
            admitted = await self._admit_caller(scope, policy, send)
            if admitted is None:
                return
            scope, caller = admitted
        timeout_value: bytes | None = None
        for name, value in scope["headers"]:
            if name == _TIMEOUT:
                timeout_value = value
            elif name == _CALLER and not self.authenticate:
                caller = value.decode("latin-1")
        if policy.limits.rate and not await self._admit_rate(policy, caller, send):
            return
        timeout = _deadline.parse_timeout(timeout_value)
        if timeout is not None and timeout <= 0:
            message = "the caller's deadline had already passed when the request arrived"
            await _refuse(send, 504, "deadline-exceeded", message)
            return
        if not policy.limits.adaptive:
            await self._run(scope, receive, send, timeout)
            return
        limiter = self.limiter
        started = limiter.try_acquire()
        if started is None:
            message = (
                f"instance is at its concurrency limit ({limiter.limit} in flight); "
                "shedding instead of queueing"
            )
            retry = (b"retry-after", str(limiter.retry_after()).encode())
            await _refuse(send, 503, "overloaded", message, retry)
            return
        # Only a request cut short by its deadline counts as dropped: an app that raises
        # (say, on bad input) must not talk the limiter down to its minimum.
        dropped = False
        try:
            dropped = await self._run(scope, receive, send, timeout)
        finally:
            limiter.release(started, dropped=dropped)

    async def _admit_caller(
        self, scope: Scope, policy: ServicePolicy, send: Send
    ) -> tuple[Scope, str] | None:
        """Normalise the path and authorize the caller: the scope the app gets and the
        caller's service, or None once the request is refused."""
        method = scope["method"]
        raw_path = scope.get("raw_path") or encode_path(scope["path"])
        peer = peer_of(scope)
        try:
            path = normalize_raw_path(raw_path)
        except PathRejectedError as exc:
            self._denials.denied("bad-path", self.service, peer, method, exc.path)
            await _refuse(send, 400, "bad-path", str(exc))
            return None
        decision = authorize(policy.authz, None if peer is None else peer.service, method, path)
        if not decision.allowed or peer is None:  # no peer is never allowed
            self._denials.denied(decision.reason, self.service, peer, method, path)
            why = _WHY.get(decision.reason) or f"denied by rule {decision.rule!r}"
            message = f"{_who(peer)} may not {method} {path!r} on service {self.service!r}: {why}"
            await _refuse(send, 403, decision.reason, message)
            return None
        # in place: the scope is the inbound middleware's own copy, and it reads the route
        # the app's router writes into it once the request is done (for metrics)
        scope["path"] = path
        scope["raw_path"] = encode_path(path)
        return scope, peer.service

    async def _admit_rate(self, policy: ServicePolicy, caller: str, send: Send) -> bool:
        rates = self._rates
        if rates is None or self._rate_policy != policy.limits.rate:
            self._rate_policy = dict(policy.limits.rate)
            rates = self._rates = CallerRateLimits(self._rate_policy)
        who = caller or "unknown"
        if rates.try_take(who):
            return True
        wait = max(1, math.ceil(rates.retry_after(who)))
        message = f"caller {who!r} is over its rate limit for service {self.service!r}"
        await _refuse(send, 429, "rate-limited", message, (b"retry-after", str(wait).encode()))
        return False

    async def _run(self, scope: Scope, receive: Receive, send: Send, timeout: float | None) -> bool:
        """Run the app under the deadline; True when it was cut short (for the limiter)."""
        at = None if timeout is None else _deadline.now() + timeout
        token = _deadline.set_deadline(at)
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                scope_timeout.reschedule(None)  # too late to answer 504: let the body finish
            await send(message)

        try:
            async with asyncio.timeout(timeout) as scope_timeout:
                await self.app(scope, receive, send_started)
        except TimeoutError:
            if started or not scope_timeout.expired():
                raise
            message = f"no answer within the caller's deadline of {timeout:g}s"
            await _refuse(send, 504, "deadline-exceeded", message)
            return True
        except TransportError as exc:
            if started:
                raise
            await _refuse(send, exc.status, exc.reason, str(exc))
            return exc.status == 504
        finally:
            _deadline.reset_deadline(token)
        return False


async def _refuse(
    send: Send, status: int, reason: str, message: str, *extra: tuple[bytes, bytes]
) -> None:
    body = {"error": message, "reason": reason}
    await send_json(send, status, body, [(_REASON, reason.encode()), *extra])
