"""Outbound mesh: client transport, load balancing, resilience; the inbound guard."""

from __future__ import annotations

from shoal.mesh._attempts import Attempt as Attempt
from shoal.mesh._balancer import Balancer as Balancer
from shoal.mesh._client import client as client
from shoal.mesh._deadline import deadline as deadline
from shoal.mesh._deadline import remaining as remaining
from shoal.mesh._policies import PolicySource as PolicySource
from shoal.mesh._policies import StaticPolicies as StaticPolicies
from shoal.mesh._transport import MeshTransport as MeshTransport
from shoal.mesh._transport import is_service_host as is_service_host

__all__ = [
    "Attempt",
    "Balancer",
    "MeshTransport",
    "PolicySource",
    "StaticPolicies",
    "client",
    "deadline",
    "is_service_host",
    "remaining",
]
