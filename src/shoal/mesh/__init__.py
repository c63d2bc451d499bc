"""Outbound mesh: client transport and load balancing."""

from __future__ import annotations

from shoal.mesh._balancer import Balancer as Balancer
from shoal.mesh._client import client as client
from shoal.mesh._transport import MeshTransport as MeshTransport
from shoal.mesh._transport import is_service_host as is_service_host

__all__ = ["Balancer", "MeshTransport", "client", "is_service_host"]
