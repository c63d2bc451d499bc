"""Where the gateway's routes come from: ``SHOAL_GATEWAY_ROUTES``, else the manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from shoal.exceptions import ManifestError, ManifestProblem
from shoal.manifest import RouteSpec, load_manifest

__all__ = ["ROUTES_ENV", "load_routes", "parse_routes"]

ROUTES_ENV = "SHOAL_GATEWAY_ROUTES"

_ROUTES: TypeAdapter[list[RouteSpec]] = TypeAdapter(list[RouteSpec])


def load_routes(environ: Mapping[str, str] | None = None) -> tuple[RouteSpec, ...]:
    """The routes from ``SHOAL_GATEWAY_ROUTES`` if set, else from ``SHOAL_APP_DIR/shoal.yaml``.

    Raises :class:`ManifestError` saying what is wrong and where.
    """
    env = os.environ if environ is None else environ
    text = env.get(ROUTES_ENV)
    if text:
        return parse_routes(text)
    manifest = load_manifest(Path(env.get("SHOAL_APP_DIR") or os.getcwd()))
    if manifest.gateway is None:
        message = (
            "no gateway section: add one (gateway: {port: 8080, routes: [...]}) "
            f"or set {ROUTES_ENV}"
        )
        raise ManifestError([ManifestProblem(str(manifest.path), 0, 0, "gateway", message)])
    return manifest.gateway.routes


def parse_routes(text: str) -> tuple[RouteSpec, ...]:
    """Routes from JSON: ``[{"prefix": "/api", "service": "api", "strip_prefix": true}]``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(
            [ManifestProblem(ROUTES_ENV, 0, 0, "", f"not valid JSON: {exc}")]
        ) from exc
    try:
        return tuple(_ROUTES.validate_python(data))
    except ValidationError as exc:
        problems = [
            ManifestProblem(ROUTES_ENV, 0, 0, _where(error["loc"]), error["msg"])
            for error in exc.errors()
        ]
        raise ManifestError(problems) from None


def _where(loc: tuple[int | str, ...]) -> str:
    where = "routes"
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where
