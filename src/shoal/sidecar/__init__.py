"""The sidecar of a command service: shoal's inbound side in front of any program.

``shoal up`` runs a command service (a program in any language) on a loopback
``$PORT`` and, beside it, ``shoal serve shoal.sidecar:app`` as the service's mesh
instance. The sidecar holds the instance's SVID and registers it; it terminates
mutual TLS, applies the authorization policies, rate limits, deadlines and load
shedding of ``shoal serve``, and forwards each admitted request to the program
over loopback, both bodies streaming. It registers only once the program
accepts connections, and answers 502 ``upstream-error`` while it does not.
"""

from __future__ import annotations

from shoal.sidecar._app import PORT_ENV, Sidecar, app

__all__ = ["PORT_ENV", "Sidecar", "app"]
