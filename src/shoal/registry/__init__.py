"""The service registry: instance records, the endpoint cache, and discovery."""

from __future__ import annotations

from shoal.registry._cache import EndpointCache as EndpointCache
from shoal.registry._discovery import Discovery as Discovery
from shoal.registry._memory import MemoryRegistry as MemoryRegistry
from shoal.registry._records import Delete as Delete
from shoal.registry._records import InstanceRecord as InstanceRecord
from shoal.registry._records import InstanceState as InstanceState
from shoal.registry._records import Put as Put
from shoal.registry._records import RegistryUpdate as RegistryUpdate
from shoal.registry._records import Synced as Synced

__all__ = [
    "Delete",
    "Discovery",
    "EndpointCache",
    "InstanceRecord",
    "InstanceState",
    "MemoryRegistry",
    "Put",
    "RegistryUpdate",
    "Synced",
]
