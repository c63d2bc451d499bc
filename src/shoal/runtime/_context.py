"""The process's own runtime, when it runs under `shoal serve`: shared by every client."""

from __future__ import annotations

from shoal.registry._discovery import Discovery

__all__ = ["current_discovery", "set_current_discovery"]

_discovery: Discovery | None = None


def current_discovery() -> Discovery | None:
    """The discovery of the serving runtime in this process, if any."""
    return _discovery


def set_current_discovery(discovery: Discovery | None) -> None:
    global _discovery
    _discovery = discovery
