"""``shoal.yaml``: the models of an application's manifest and their loader.

``load_manifest(DIR)`` reads ``DIR/shoal.yaml`` and returns a :class:`Manifest`,
or raises :class:`~shoal.exceptions.ManifestError` listing every problem as
``PATH:LINE:COL: field: message``.
"""

from __future__ import annotations

from shoal.manifest._loader import find_manifest as find_manifest
from shoal.manifest._loader import load_manifest as load_manifest
from shoal.manifest._models import MANIFEST_FILENAME as MANIFEST_FILENAME
from shoal.manifest._models import GatewaySpec as GatewaySpec
from shoal.manifest._models import Manifest as Manifest
from shoal.manifest._models import RouteSpec as RouteSpec
from shoal.manifest._models import ServiceSpec as ServiceSpec
from shoal.manifest._policy import DEFAULT_POLICY as DEFAULT_POLICY
from shoal.manifest._policy import ServicePolicy as ServicePolicy
from shoal.manifest._policy import parse_duration as parse_duration
from shoal.manifest._state import StateSpec as StateSpec

__all__ = [
    "DEFAULT_POLICY",
    "MANIFEST_FILENAME",
    "GatewaySpec",
    "Manifest",
    "RouteSpec",
    "ServicePolicy",
    "ServiceSpec",
    "StateSpec",
    "find_manifest",
    "load_manifest",
    "parse_duration",
]
