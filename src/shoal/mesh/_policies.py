"""Where a process finds the traffic policy of each service it calls or serves.

The transport and the inbound middleware read policies through
:class:`PolicySource`; the backbone's watcher (``shoal.backbone``) keeps one up
to date from NATS, :class:`StaticPolicies` holds them in memory (tests, scripts).
A service nobody wrote rules for gets shoal's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from shoal.manifest._policy import DEFAULT_POLICY, ServicePolicy

__all__ = ["PolicySource", "StaticPolicies"]


class PolicySource(Protocol):
    """The current policy of each service (shoal's defaults for one with none)."""

    def get(self, service: str) -> ServicePolicy: ...


class StaticPolicies:
    """Policies held in memory; ``set`` changes one live."""

    def __init__(self, policies: Mapping[str, ServicePolicy] | None = None) -> None:
        self._policies = dict(policies or {})

    def get(self, service: str) -> ServicePolicy:
        return self._policies.get(service, DEFAULT_POLICY)

    def set(self, service: str, policy: ServicePolicy) -> None:
        self._policies[service] = policy
