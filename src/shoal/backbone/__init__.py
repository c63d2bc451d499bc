"""The NATS backbone: the embedded server, the connection, the registry and policy buckets."""

from __future__ import annotations

from shoal.backbone._connection import Backbone as Backbone
from shoal.backbone._policies import NatsPolicies as NatsPolicies
from shoal.backbone._registry import NatsRegistry as NatsRegistry
from shoal.backbone._server import EmbeddedNats as EmbeddedNats
from shoal.backbone._server import find_nats_server as find_nats_server

__all__ = ["Backbone", "EmbeddedNats", "NatsPolicies", "NatsRegistry", "find_nats_server"]
