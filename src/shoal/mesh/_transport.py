"""The outbound mesh transport: ``http://<service>/...`` goes to a ready instance.

Requests to a bare service name (one DNS label, not ``localhost``) are balanced
over that service's ready instances from discovery and sent over shoal's own
HTTP/1.1 pool; every other URL passes through to a regular httpx transport.
A connection refused or reset before anything was sent marks that instance
down and the same request goes to another one. An idempotent request whose
small answer is cut off by the instance dying goes to another one too; other
requests are not repeated once their bytes have left (retry budgets and
policies come in their own layer).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol

import httpx

from shoal.exceptions import EndpointsUnreachableError, NoEndpointsError
from shoal.mesh._balancer import Balancer
from shoal.mesh._http11 import ConnectFailedError, Http11Pool
from shoal.registry._discovery import Discovery
from shoal.registry._records import InstanceRecord

__all__ = ["MeshTransport", "is_service_host"]

DOWN_FOR = 5.0
"""Seconds an instance that refused a connection is skipped (until it re-registers)."""

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUFFER_LIMIT = 64 * 1024
"""Small, length-delimited answers to idempotent requests are read whole before they are
returned, so an instance dying mid-answer sends the call elsewhere instead of failing it."""


def _small_body(response: httpx.Response) -> bool:
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT


class _Whole(httpx.AsyncByteStream):
    """A body already read in full, still served as a stream (aiter_raw works on it)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._content:
            yield self._content


async def _buffered(response: httpx.Response) -> httpx.Response:
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    try:
        content = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    return httpx.Response(
        response.status_code,
        headers=response.headers.raw,
        stream=_Whole(content),
        extensions=response.extensions,
        request=response.request,
    )


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
    ) -> None:
        self._discovery = discovery
        self._opener = opener
        self._pool = pool or Http11Pool()
        self._fallback = fallback or httpx.AsyncHTTPTransport()
        self.balancer = balancer or Balancer()
        self._lock = asyncio.Lock()
        self._generation = -1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        service = request.url.host
        if not is_service_host(service):
            return await self._fallback.handle_async_request(request)
        discovery = self._discovery or await self._open()
        cache = discovery.cache
        if cache.generation != self._generation:  # membership changed: forget the departed
            self._generation = cache.generation
            self.balancer.forget({r.instance for s in cache.services() for r in cache.instances(s)})
        candidates = discovery.ready(service)
        if not candidates:
            raise NoEndpointsError(_no_endpoints(service, discovery), request=request)
        balancer = self.balancer
        refused: list[tuple[InstanceRecord, Exception]] = []
        tried: set[str] = set()
        while True:
            record = balancer.pick(candidates, tried)
            if record is None and not refused:
                # Every candidate is marked down: try them anyway rather than fail untried.
                record = _first_untried(candidates, tried)
            if record is None:
                cut_off = [exc for _, exc in refused if not isinstance(exc, ConnectFailedError)]
                if cut_off:  # an instance broke off its answer: say so, not "unreachable"
                    raise cut_off[-1]
                raise EndpointsUnreachableError(_unreachable(service, refused), request=request)
            started = balancer.start(record.instance)
            try:
                response = await self._pool.send(record.host, record.port, request)
                if request.method in IDEMPOTENT and _small_body(response):
                    response = await _buffered(response)
            except (ConnectFailedError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                balancer.abandon(record.instance)
                if not isinstance(exc, ConnectFailedError) and request.method not in IDEMPOTENT:
                    raise  # bytes of a non-idempotent request may have been acted on
                balancer.mark_down(record.instance, DOWN_FOR)
                self._pool.drop_endpoint(record.host, record.port)
                tried.add(record.instance)
                refused.append((record, exc))
                continue
            except BaseException:
                balancer.abandon(record.instance)
                raise
            balancer.finish(record.instance, started)
            response.extensions["shoal.instance"] = record.instance
            return response

    async def _open(self) -> Discovery:
        async with self._lock:
            if self._discovery is None:
                if self._opener is None:
                    from shoal.mesh._open import default_opener

                    self._opener = default_opener()
                self._discovery = await self._opener.open()
            return self._discovery

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._fallback.aclose()
        if self._opener is not None:
            await self._opener.aclose()


class _Opener(Protocol):
    """Opens (and later closes) a Discovery that the transport owns."""

    async def open(self) -> Discovery: ...

    async def aclose(self) -> None: ...


def _first_untried(candidates: list[InstanceRecord], tried: set[str]) -> InstanceRecord | None:
    return next((r for r in candidates if r.instance not in tried), None)


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


def _unreachable(service: str, refused: list[tuple[InstanceRecord, Exception]]) -> str:
    detail = "; ".join(f"{r.instance} at {r.address}: {exc}" for r, exc in refused)
    return f"every instance of service {service!r} refused or dropped the connection ({detail})"
