"""The process's own runtime, when it runs under `shoal serve`: shared by every client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.registry._discovery import Discovery

if TYPE_CHECKING:
    from shoal.events._publisher import Publisher
    from shoal.mesh._policies import PolicySource
    from shoal.runtime._identity import WorkloadIdentity

__all__ = [
    "current_discovery",
    "current_identity",
    "current_policies",
    "current_publisher",
    "set_current_discovery",
    "set_current_identity",
    "set_current_policies",
    "set_current_publisher",
]

_discovery: Discovery | None = None
_policies: PolicySource | None = None
_identity: WorkloadIdentity | None = None
_publisher: Publisher | None = None


def current_discovery() -> Discovery | None:
    """The discovery of the serving runtime in this process, if any."""
    return _discovery


def set_current_discovery(discovery: Discovery | None) -> None:
    global _discovery
    _discovery = discovery


def current_policies() -> PolicySource | None:
    """The live traffic policies of the serving runtime in this process, if any."""
    return _policies


def set_current_policies(policies: PolicySource | None) -> None:
    global _policies
    _policies = policies


def current_identity() -> WorkloadIdentity | None:
    """The workload identity (SVID) of this process, if it has one."""
    return _identity


def set_current_identity(identity: WorkloadIdentity | None) -> None:
    global _identity
    _identity = identity


def current_publisher() -> Publisher | None:
    """The event publisher of this service (its backbone connection and name), if serving."""
    return _publisher


def set_current_publisher(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher
