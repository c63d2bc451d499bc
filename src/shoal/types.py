"""Shared aliases and Protocols; no I/O here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shoal.registry._records import InstanceRecord, RegistryUpdate

__all__ = ["ASGIApp", "Clock", "Message", "Receive", "RegistryBackend", "Scope", "Send"]

Clock = Callable[[], float]
"""A monotonic clock in seconds; injected so timing can be tested without sleeping."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RegistryBackend(Protocol):
    """Where instances register and clients watch; NATS KV, or memory for tests.

    ``watch()`` first yields a ``Put`` for every live entry, then ``Synced``,
    then changes as they happen. It ends (or raises ``ShoalError``) when the
    connection is lost; the caller freezes its cache and watches again.
    """

    async def put(self, record: InstanceRecord) -> None: ...

    async def delete(self, service: str, instance: str) -> None: ...

    def watch(self) -> AsyncIterator[RegistryUpdate]: ...

    async def aclose(self) -> None: ...
