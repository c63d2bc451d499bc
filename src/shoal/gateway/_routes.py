"""The gateway's route table: the longest prefix wins, on path-segment boundaries.

Matching works on the raw request path, one percent-decoded segment at a time,
so ``/api/catalog`` matches ``/api/catalog``, ``/api/catalog/items`` and
``/api/%63atalog`` but neither ``/api/catalogue`` nor ``/api%2Fcatalog`` (an
encoded slash is part of a segment, not a separator). The path sent upstream
keeps the client's encoding. No I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from urllib.parse import quote, unquote_to_bytes

from shoal.manifest import RouteSpec
from shoal.mesh import is_service_host

__all__ = ["Match", "Route", "RouteTable"]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A compiled route; ``prefix`` is normalised (no trailing ``/``, ``/`` for the root)."""

    prefix: str
    service: str
    strip_prefix: bool
    segments: tuple[bytes, ...]
    prefix_header: bytes  # the prefix as a header value (percent-encoded ASCII)

    @classmethod
    def compile(cls, spec: RouteSpec) -> Route:
        if not is_service_host(spec.service):
            raise ValueError(
                f"route {spec.prefix!r}: {spec.service!r} is not a service name "
                "(the gateway routes to services of the app, by name)"
            )
        trimmed = spec.prefix.strip("/")
        segments = tuple(unquote_to_bytes(s) for s in trimmed.split("/")) if trimmed else ()
        prefix = "/" + trimmed
        header = quote(prefix, safe="/%:@!$&'()*+,;=-._~").encode("ascii")
        return cls(prefix, spec.service, spec.strip_prefix, segments, header)


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """The route a request takes, and the raw path (without query) to send upstream."""

    route: Route
    path: bytes

    @property
    def stripped(self) -> bool:
        return self.route.strip_prefix and bool(self.route.segments)


class RouteTable:
    """Routes by prefix; when two routes declare the same prefix, the first one wins."""

    def __init__(self, specs: Sequence[RouteSpec]) -> None:
        routes: dict[str, Route] = {}
        for spec in specs:
            route = Route.compile(spec)
            routes.setdefault(route.prefix, route)
        self.routes: tuple[Route, ...] = tuple(routes.values())
        # Longest first: among the prefixes that match a path, the deepest is the longest.
        self._by_depth = sorted(self.routes, key=lambda r: len(r.segments), reverse=True)
        self._depth = len(self._by_depth[0].segments) if self._by_depth else 0

    @property
    def prefixes(self) -> list[str]:
        """The prefixes, in the order they were declared."""
        return [route.prefix for route in self.routes]

    def match(self, raw_path: bytes) -> Match | None:
        """The route for ``raw_path`` (the path as sent, percent-encoded), if any."""
        if not raw_path.startswith(b"/"):
            return None  # e.g. "OPTIONS *"
        raw = raw_path[1:].split(b"/")
        decoded = tuple(unquote_to_bytes(s) for s in raw[: self._depth])
        for route in self._by_depth:
            depth = len(route.segments)
            if decoded[:depth] != route.segments:
                continue
            if route.strip_prefix and depth:
                return Match(route, b"/" + b"/".join(raw[depth:]))
            return Match(route, raw_path)
        return None
