"""The outbound mesh transport: ``http://<service>/...`` goes to a ready instance.

Requests to a bare service name (one DNS label, not ``localhost``) go through
the mesh: the service's policy (deadline, retries inside a budget, outlier
ejection, bulkhead, version routing, faults, mirroring; see ``_call.py``) over
its ready instances from discovery, sent over shoal's own HTTP/1.1 pool. Every
other URL passes through to a regular httpx transport.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import random
from collections import Counter
from typing import Protocol

import httpx

from shoal.exceptions import NoEndpointsError, TransportError
from shoal.mesh._balancer import Balancer
from shoal.mesh._call import REASON_HEADER, Call
from shoal.mesh._destination import Destination
from shoal.mesh._http11 import ClientTls, Http11Pool
from shoal.mesh._metrics import ClientTimer
from shoal.mesh._mirror import Mirror
from shoal.mesh._policies import PolicySource, StaticPolicies
from shoal.mesh._routing import wants_mirror
from shoal.registry._cache import EndpointCache
from shoal.registry._discovery import Discovery
from shoal.runtime._context import current_identity

__all__ = ["MeshTransport", "is_service_host"]

_DEFAULTS = StaticPolicies()


@functools.lru_cache(maxsize=1024)
def is_service_host(host: str) -> bool:
    """True for a bare service name: one DNS label, not ``localhost``, not an address."""
    if not host or "." in host or ":" in host or host == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class MeshTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        discovery: Discovery | None = None,
        *,
        opener: _Opener | None = None,
        pool: Http11Pool | None = None,
        fallback: httpx.AsyncBaseTransport | None = None,
        balancer: Balancer | None = None,
        policies: PolicySource | None = None,
        rng: random.Random | None = None,
        caller: str | None = None,
    ) -> None:
        self._discovery = discovery
        self._opener = opener
        self.pool = pool or Http11Pool(tls=self._identity)
        self._fallback = fallback or httpx.AsyncHTTPTransport()
        self.balancer = balancer or Balancer()
        self._policies = policies
        self.rng = rng or random.Random()
        self.caller = caller if caller is not None else os.environ.get("SHOAL_SERVICE", "")
        """The service this process is, sent as ``shoal-caller`` (rate limits per caller)."""
        self.caller_bytes = self.caller.encode()
        self.destinations: dict[str, Destination] = {}
        self.mirror = Mirror(self)
        self._lock = asyncio.Lock()
        self._generation = -1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        service = request.url.host
        if not is_service_host(service):
            return await self._fallback.handle_async_request(request)
        timer = ClientTimer(self.caller, service, request.method)
        try:
            response = await self._call(service, request)
        except TransportError as exc:
            timer.done(None, error_type=exc.reason)
            raise
        except asyncio.CancelledError:
            timer.done(None, error_type="cancelled")
            raise
        except Exception as exc:
            timer.done(None, error_type=type(exc).__name__)
            raise
        found = response.headers.get(REASON_HEADER)
        timer.done(response.status_code, reason=found or "")
        return response

    async def _call(self, service: str, request: httpx.Request) -> httpx.Response:
        discovery = self._discovery or await self._open()
        cache = discovery.cache
        if cache.generation != self._generation:  # membership changed: forget the departed
            self._generation = cache.generation
            self._forget(cache)
        candidates = discovery.ready(service)
        if not candidates:
            raise NoEndpointsError(_no_endpoints(service, discovery), request=request)
        dest = self._destination(service)
        call = Call(self, request, dest, candidates)
        if dest.policy.traffic.mirror is None:
            return await call.run()
        mirror_to = wants_mirror(dest.policy.traffic, self.rng)
        if mirror_to is None:
            return await call.run()
        return await self.mirror.run(call, mirror_to, candidates)

    def _destination(self, service: str) -> Destination:
        policy = (self._policies or _DEFAULTS).get(service)
        dest = self.destinations.get(service)
        if dest is None:
            dest = self.destinations[service] = Destination(service, policy, caller=self.caller)
        elif dest.policy is not policy:
            dest.update(policy)
        return dest

    def _forget(self, cache: EndpointCache) -> None:
        present = {r.instance for s in cache.services() for r in cache.instances(s)}
        self.balancer.forget(present)
        for dest in self.destinations.values():
            dest.outlier.forget(present)

    def _identity(self) -> ClientTls | None:
        """The SVID to present: the serving process's, else the one the opener obtained."""
        found = current_identity()
        if found is None and self._opener is not None:
            return self._opener.identity()
        return found

    async def _open(self) -> Discovery:
        async with self._lock:
            if self._discovery is None:
                if self._opener is None:
                    from shoal.mesh._open import default_opener

                    self._opener = default_opener()
                self._discovery = await self._opener.open()
            if self._policies is None:
                found = self._opener.policy_source() if self._opener is not None else None
                self._policies = found if found is not None else StaticPolicies()
            return self._discovery

    async def aclose(self) -> None:
        await self.mirror.aclose()
        await self.pool.aclose()
        await self._fallback.aclose()
        if self._opener is not None:
            await self._opener.aclose()


class _Opener(Protocol):
    """Opens (and later closes) a Discovery that the transport owns."""

    async def open(self) -> Discovery: ...

    def policy_source(self) -> PolicySource | None: ...

    def identity(self) -> ClientTls | None: ...

    async def aclose(self) -> None: ...


def _no_endpoints(service: str, discovery: Discovery) -> str:
    present = discovery.instances(service)
    if not present:
        known = ", ".join(discovery.cache.services()) or "none"
        return (
            f"no ready instance of service {service!r}: none is registered "
            f"(services with instances: {known})"
        )
    states = Counter(r.state for r in present)
    detail = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"no ready instance of service {service!r}: {len(present)} registered ({detail})"
