"""The gateway: the app's one entry point from outside.

``shoal serve shoal.gateway:app`` runs it (the supervisor does, with
``SHOAL_SERVICE=gateway`` and ``SHOAL_PORT`` from the manifest). At startup it
loads its routes from ``SHOAL_GATEWAY_ROUTES`` (a JSON list of
``{"prefix", "service", "strip_prefix"}``) or else from the ``gateway`` section
of ``SHOAL_APP_DIR/shoal.yaml``, and sends each request through the mesh to the
service of the longest matching prefix. ``create_gateway(routes, client=...)``
builds one in code (for tests, or to mount in another ASGI app).

A route with ``jwt`` lets through only requests with a valid bearer token, and
tells the service who the user is in the ``shoal-user`` header (the token's
verified claims); :func:`user_claims` reads them. The gateway drops any
``shoal-user`` a client sends, on every route.
"""

from __future__ import annotations

from shoal.gateway._app import Gateway as Gateway
from shoal.gateway._app import create_gateway as create_gateway
from shoal.gateway._config import ROUTES_ENV as ROUTES_ENV
from shoal.gateway._config import load_routes as load_routes
from shoal.gateway._config import parse_routes as parse_routes
from shoal.gateway._user import USER_HEADER as USER_HEADER
from shoal.gateway._user import user_claims as user_claims
from shoal.types import ASGIApp

__all__ = [
    "ROUTES_ENV",
    "USER_HEADER",
    "Gateway",
    "app",
    "create_gateway",
    "load_routes",
    "parse_routes",
    "user_claims",
]

app: ASGIApp = Gateway()
"""The gateway that ``shoal serve shoal.gateway:app`` runs; routes load at startup."""
