"""Who is calling: the authenticated peer of an inbound mesh request.

The mTLS listener checks the caller's SVID during the handshake and puts what it
proved into the ASGI scope under :data:`PEER_KEY`; nothing a client sends (no
header) can set it. A request without it came from an unauthenticated caller.
"""

from __future__ import annotations

import dataclasses

from shoal.types import Scope

__all__ = ["PEER_KEY", "Peer", "peer_of"]

PEER_KEY = "shoal.peer"


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """The caller proved by its certificate: its SPIFFE ID and the service that names."""

    spiffe_id: str
    service: str


def peer_of(scope: Scope) -> Peer | None:
    """The authenticated caller of ``scope``'s request, or None if it has none."""
    peer = scope.get(PEER_KEY)
    return peer if isinstance(peer, Peer) else None
