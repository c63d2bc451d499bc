"""``shoal.client()``: an httpx.AsyncClient whose service-name hosts go through the mesh."""

from __future__ import annotations

from typing import Any

import httpx

from shoal.mesh._open import NatsOpener
from shoal.mesh._policies import PolicySource
from shoal.mesh._transport import MeshTransport
from shoal.registry._discovery import Discovery

__all__ = ["client"]


def client(
    *,
    discovery: Discovery | None = None,
    policies: PolicySource | None = None,
    nats_url: str | None = None,
    app: str | None = None,
    timeout: float | httpx.Timeout = 10.0,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Return an ``httpx.AsyncClient`` that sends ``http://<service>/...`` through the mesh.

    Inside `shoal serve` it shares the instance's discovery; elsewhere it opens its
    own on first use from ``nats_url``/``SHOAL_NATS_URL`` (or the app directory's
    running backbone) and closes it with the client. Other hosts pass through.
    Proxy environment variables are ignored unless ``trust_env=True`` is given,
    so a corporate proxy never captures service-to-service calls.

    Each service's traffic policy (deadline, retries, ejection, routing) comes from
    the app's live policies, or from ``policies`` when given (with ``discovery``,
    shoal's defaults apply unless ``policies`` is given too). The ``timeout`` here is
    httpx's per-read timeout; the mesh deadline is the service's ``timeout``.
    """
    opener = None if discovery is not None else NatsOpener(nats_url, app)
    transport = MeshTransport(discovery, opener=opener, policies=policies)
    kwargs.setdefault("trust_env", False)
    return httpx.AsyncClient(transport=transport, timeout=timeout, **kwargs)
