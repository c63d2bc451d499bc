"""The gateway: the app's one entry point from outside.

``shoal serve shoal.gateway:app`` runs it (the supervisor does, with
``SHOAL_SERVICE=gateway`` and ``SHOAL_PORT`` from the manifest). At startup it
loads its routes from ``SHOAL_GATEWAY_ROUTES`` (a JSON list of
``{"prefix", "service", "strip_prefix"}``) or else from the ``gateway`` section
of ``SHOAL_APP_DIR/shoal.yaml``, and sends each request through the mesh to the
service of the longest matching prefix. ``create_gateway(routes, client=...)``
builds one in code (for tests, or to mount in another ASGI app).
"""

from __future__ import annotations

from shoal.gateway._app import Gateway as Gateway
from shoal.gateway._app import create_gateway as create_gateway
from shoal.gateway._config import ROUTES_ENV as ROUTES_ENV
from shoal.gateway._config import load_routes as load_routes
from shoal.gateway._config import parse_routes as parse_routes
from shoal.types import ASGIApp

__all__ = ["ROUTES_ENV", "Gateway", "app", "create_gateway", "load_routes", "parse_routes"]

app: ASGIApp = Gateway()
"""The gateway that ``shoal serve shoal.gateway:app`` runs; routes load at startup."""
