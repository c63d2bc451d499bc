"""The contract between :class:`~shoal.state.StateStore` and a storage engine.

A backend stores, for one (app, service) namespace, keys mapped to (JSON text, ETag,
expiry). The store validates and encodes; the backend only persists. Every backend
passes the contract suite in ``tests/state/test_contract.py``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["OutboxRecord", "StateBackend", "Write"]


@dataclass(frozen=True, slots=True)
class Write:
    """One staged write: a set (``value`` is JSON text) or a delete (``value`` is None).

    Its condition, checked atomically with the commit: ``etag``, if not None, is the
    ETag the key must currently have (live, not expired); ``absent``, if True, says the
    key must not be live (never written, deleted or expired: a create-only write). A
    write has at most one of the two. If a condition fails, the whole commit fails with
    ConcurrencyError and nothing is written. (A delete with ``absent`` only comes from a
    transaction that created a key and then deleted it: it checks and writes nothing.)
    """

    key: str
    value: str | None
    etag: str | None = None
    new_etag: str = ""
    ttl: float | None = None
    absent: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An opaque record committed atomically with state writes (the transactional
    outbox of shoal.events): ``id`` is unique, ``payload`` is text; records come back
    from :meth:`StateBackend.outbox_pending` in commit order until removed."""

    id: str
    payload: str


class StateBackend(Protocol):
    """Storage for one namespace. ``name`` is the engine (``sqlite``, ``postgres``,
    ``redis``); ``where`` says where it stores (a path or an address without password)."""

    name: str
    where: str

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(JSON text, ETag) of each live key among ``keys``; absent keys are left out."""
        ...

    async def list(self, prefix: str, limit: int) -> builtins.list[tuple[str, str]]:
        """Up to ``limit`` live (key, JSON text) whose key starts with ``prefix``, by key
        in code point order."""
        ...

    async def commit(
        self, writes: Sequence[Write], outbox: Sequence[OutboxRecord] = ()
    ) -> builtins.list[bool]:
        """Apply ``writes`` (distinct keys) and append ``outbox``, all or nothing.

        Raises ConcurrencyError (nothing written) if a write's ``etag`` does not match,
        or if a write with ``absent`` finds its key live. Returns, per write, whether the
        key was live before it (what delete reports; sets: True when unknown, False for
        an ``absent`` write).
        """
        ...

    async def outbox_pending(self, limit: int) -> builtins.list[OutboxRecord]:
        """The oldest ``limit`` outbox records not yet removed, in commit order."""
        ...

    async def outbox_remove(self, ids: Sequence[str]) -> None:
        """Forget the outbox records ``ids`` (delivered); unknown ids are ignored."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; idempotent."""
        ...
