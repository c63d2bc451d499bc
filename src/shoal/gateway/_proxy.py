"""Forwarding one request through the mesh and streaming the answer back.

Both bodies stream: the request body goes to the service as the client sends
it (never held whole in memory, so no size limit applies here), and the
response body goes back chunk by chunk as the service sends it. When the
client disconnects, the upstream exchange is abandoned at once, even while
the service is still thinking or streaming.

A request that fails before the service answers gets an explained response:
the mesh error's own status and ``shoal-reason`` (503 ``no-endpoints``,
``breaker-open``, ``overloaded``, ``budget-exhausted``; 504 ``timeout``,
``deadline-exceeded``; 502 ``upstream-error``). If the service breaks off a response already
under way, the client's connection is closed (the response is visibly cut short).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx

from shoal.exceptions import BackboneError, TransportError
from shoal.gateway._headers import ROUTE_HEADER, has_body, request_headers, response_headers
from shoal.gateway._responses import send_json
from shoal.gateway._routes import Match
from shoal.types import Receive, Scope, Send

__all__ = ["proxy"]

log = logging.getLogger("shoal.gateway")


class _ClientGoneError(Exception):
    """The client disconnected: nobody is left to answer."""


async def proxy(
    client: httpx.AsyncClient,
    scope: Scope,
    receive: Receive,
    send: Send,
    match: Match,
    *,
    user: bytes | None = None,
) -> None:
    """Send the request in ``scope`` to ``match.route.service`` and relay its response.

    ``user`` is the value of ``shoal-user`` to send (the token's verified claims), if any.
    """
    body_read = asyncio.Event()
    content = _request_body(receive, body_read) if has_body(scope) else None
    if content is None:
        body_read.set()
    request = httpx.Request(
        scope["method"],
        _upstream_url(scope, match),
        headers=request_headers(scope, match, user=user),
        content=content,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(_watch_disconnect(receive, body_read))
            try:
                await _exchange(client, request, send, match, scope["path"])
            finally:
                watcher.cancel()
    except* _ClientGoneError:
        log.debug("%s %s: the client went away", request.method, scope["path"])


def _upstream_url(scope: Scope, match: Match) -> httpx.URL:
    query: bytes = scope.get("query_string", b"")
    target = match.path + b"?" + query if query else match.path
    return httpx.URL(scheme="http", host=match.route.service, raw_path=target)


async def _request_body(receive: Receive, done: asyncio.Event) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            done.set()
            return


async def _watch_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Raise ``_ClientGoneError`` when the client disconnects (once its body is read)."""
    await body_read.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError


async def _exchange(
    client: httpx.AsyncClient, request: httpx.Request, send: Send, match: Match, path: str
) -> None:
    try:
        response = await client.send(request, stream=True)
    except _ClientGoneError:
        raise
    except Exception as exc:
        await _send_failure(send, request.method, path, match, exc)
        return
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw, match),
            }
        )
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # Too late for an explained status: returning unfinished closes the connection.
            log.warning(
                "%s %s -> %s: the response broke off: %s",
                request.method,
                path,
                match.route.service,
                _describe(exc),
            )
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()


async def _send_failure(send: Send, method: str, path: str, match: Match, exc: Exception) -> None:
    service = match.route.service
    status, reason, message = _explain(exc, service)
    if status == 500:
        log.error("%s %s -> %s: %s", method, path, service, message, exc_info=exc)
    else:
        log.warning("%s %s -> %s: %s: %s", method, path, service, reason, message)
    headers = [(ROUTE_HEADER, match.route.prefix_header)]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    body = {"error": message, "reason": reason, "service": service, "route": match.route.prefix}
    await send_json(send, status, body, reason=reason, headers=headers)


def _explain(exc: Exception, service: str) -> tuple[int, str, str]:
    """(status, shoal-reason, message) for a request that got no response."""
    if isinstance(exc, TransportError):  # the mesh's own: it knows its reason and status
        return exc.status, exc.reason, str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return 504, "timeout", f"service {service!r} did not answer in time ({_describe(exc)})"
    if isinstance(exc, httpx.HTTPError):
        message = f"service {service!r} failed before answering ({_describe(exc)})"
        return 502, "upstream-error", message
    if isinstance(exc, BackboneError):
        return 503, "no-backbone", str(exc)
    message = f"the gateway failed to forward to service {service!r} ({type(exc).__name__})"
    return 500, "gateway-error", message


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
