"""Which headers cross the gateway, in each direction.

Hop-by-hop headers (RFC 9110 section 7.6.1: ``connection``, ``keep-alive``,
``proxy-*``, ``te``, ``trailer``, ``transfer-encoding``, ``upgrade``, and any
header that ``connection`` names) stay on their own connection. Towards the
service, the mesh client sets ``host``, the gateway answers ``expect`` itself,
and it owns the ``x-forwarded-*`` headers (this is the edge: what a client
claims there is replaced, except ``x-forwarded-for``, which is appended to) and
``shoal-user``: a client's is always dropped, on every route, and on a route
with ``jwt`` the gateway sets its own, the verified claims of the token.
Cookies named ``shoal_session_*`` (the dashboard's; browsers send a host's
cookies to every port of it) are taken out of ``cookie``, so no service behind
the gateway ever sees a control-API session.
Back to the client, the upstream ``date`` is dropped (the gateway's server sends
its own) and ``shoal-route`` names the route taken.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.gateway._routes import Match
from shoal.gateway._user import USER_HEADER
from shoal.types import Scope

__all__ = ["ROUTE_HEADER", "has_body", "request_headers", "response_headers"]

ROUTE_HEADER = b"shoal-route"

Headers = list[tuple[bytes, bytes]]

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
_REQUEST_DROP = _HOP_BY_HOP | {
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-prefix",
    USER_HEADER.encode(),  # only the gateway may say who the user is
}
_RESPONSE_DROP = _HOP_BY_HOP | {b"date"}


_SESSION_COOKIE = b"shoal_session_"


def _without_sessions(cookie: bytes) -> bytes:
    """``cookie`` without the dashboard's session cookies."""
    kept = [c for c in cookie.split(b";") if not c.strip().startswith(_SESSION_COOKIE)]
    return b";".join(kept).strip()


def _connection_options(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names listed in ``connection``: hop-by-hop for this connection only."""
    names: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


def has_body(scope: Scope) -> bool:
    """Whether the request declares a body (HTTP/1.1: a length or a transfer coding)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def request_headers(scope: Scope, match: Match, *, user: bytes | None = None) -> Headers:
    """The headers to send to the service for a request that took ``match``.

    ``user`` is the value of ``shoal-user`` (the verified claims), on a route with ``jwt``.
    """
    raw: Headers = scope["headers"]  # ASGI: names are lowercase
    options = _connection_options(raw)
    out: Headers = []
    host: bytes | None = None
    forwarded_for: list[bytes] = []
    for name, value in raw:
        if name in _REQUEST_DROP or name.startswith(b"proxy-") or name in options:
            if name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
            continue
        if name == b"cookie" and _SESSION_COOKIE in value:
            value = _without_sessions(value)
            if not value:
                continue
        out.append((name, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(str(client[0]).encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", str(scope.get("scheme") or "http").encode("latin-1")))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    if match.stripped:
        out.append((b"x-forwarded-prefix", match.route.prefix_header))
    if user is not None:
        out.append((USER_HEADER.encode(), user))
    return out


def response_headers(raw: Headers, match: Match) -> Headers:
    """The service's response headers as the client gets them, plus ``shoal-route``."""
    options = _connection_options(raw)
    out: Headers = []
    for name, value in raw:
        lower = name.lower()
        if lower in _RESPONSE_DROP or lower.startswith(b"proxy-") or lower in options:
            continue
        out.append((lower, value))
    out.append((ROUTE_HEADER, match.route.prefix_header))
    return out
