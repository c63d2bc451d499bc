"""Inbound protection of an instance: deadlines, rate limits per caller, load shedding.

Wraps the user's app inside ``shoal serve``. For each request, in order:

1. a rate limit per caller service (``limits.rate``; the caller named in
   ``shoal-caller``) → 429 ``rate-limited`` with ``Retry-After``;
2. a request whose ``shoal-timeout`` says no time is left → 504
   ``deadline-exceeded``, before the app runs;
3. the adaptive concurrency limit (``limits.adaptive``) → 503 ``overloaded``
   with ``Retry-After`` for what is past it, so admitted requests keep their
   latency instead of every request queueing;
4. the app runs with the deadline in a contextvar (outbound calls inherit it);
   if it passes before the response starts, the app is cancelled and the
   caller gets 504 ``deadline-exceeded``; a mesh error the app lets escape
   (say, ``breaker-open`` from a call it made) is answered with its status and
   reason instead of a bare 500.
"""

from __future__ import annotations

import asyncio
import math

from shoal._asgi import send_json
from shoal.exceptions import TransportError
from shoal.manifest._policy import DEFAULT_POLICY, ServicePolicy
from shoal.mesh import _deadline
from shoal.mesh._limiter import AdaptiveLimiter
from shoal.mesh._policies import PolicySource
from shoal.mesh._ratelimit import CallerRateLimits
from shoal.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InboundGuard"]

_TIMEOUT = _deadline.TIMEOUT_HEADER.encode()
_CALLER = b"shoal-caller"
_REASON = b"shoal-reason"


class InboundGuard:
    def __init__(
        self,
        app: ASGIApp,
        service: str,
        policies: PolicySource | None = None,
        *,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.policies = policies
        self.limiter = limiter or AdaptiveLimiter()
        self._rates: CallerRateLimits | None = None
        self._rate_policy: dict[str, float] | None = None

    def _policy(self) -> ServicePolicy:
        return self.policies.get(self.service) if self.policies is not None else DEFAULT_POLICY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout_value: bytes | None = None
        caller = ""
        for name, value in scope["headers"]:
            if name == _TIMEOUT:
                timeout_value = value
            elif name == _CALLER:
                caller = value.decode("latin-1")
        policy = self._policy()
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
