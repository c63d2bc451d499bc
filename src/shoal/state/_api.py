"""What a service uses: :class:`StateStore`, its :class:`Transaction` and :class:`Item`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from shoal.exceptions import ConcurrencyError, StateError
from shoal.state._backend import OutboxRecord, StateBackend, Write
from shoal.state._codec import check_key, check_ttl, conflict, decode, encode, new_etag

__all__ = ["Item", "StateStore", "Transaction"]


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value and its ETag, to pass back as ``etag=`` for a conditional write."""

    value: Any
    etag: str


class StateStore:
    """The state of one service: JSON values by key, with ETags, TTLs and transactions.

    Opened by :func:`shoal.state.open_sqlite`, :func:`~shoal.state.open_postgres` or
    :func:`~shoal.state.open_redis` for one (app, service); it never sees another
    service's keys. Use it as ``async with`` or call :meth:`aclose`.
    """

    def __init__(self, backend: StateBackend) -> None:
        self._backend = backend
        self.on_outbox: Callable[[], None] | None = None
        """Called after a commit that stored outbox records (the runtime's relay wakes)."""

    @property
    def backend(self) -> StateBackend:
        """The storage engine underneath (for shoal.events' outbox relay)."""
        return self._backend

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def get(self, key: str) -> Any:
        """The value of ``key``, or None if it is absent or expired."""
        item = await self.get_item(key)
        return None if item is None else item.value

    async def get_item(self, key: str) -> Item | None:
        """The value and ETag of ``key``, or None if it is absent or expired."""
        found = await self._backend.get([check_key(key)])
        if key not in found:
            return None
        text, etag = found[key]
        return Item(decode(text), etag)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the live keys among ``keys``; absent ones are left out."""
        wanted = list(dict.fromkeys(check_key(k) for k in keys))
        if not wanted:
            return {}
        found = await self._backend.get(wanted)
        return {k: decode(found[k][0]) for k in wanted if k in found}

    async def list(self, prefix: str = "", *, limit: int = 1000) -> builtins.list[tuple[str, Any]]:
        """Up to ``limit`` (key, value) pairs whose key starts with ``prefix``, sorted by
        key (code point order). ``prefix`` is literal: ``%``, ``_`` and ``*`` match
        themselves."""
        if not isinstance(prefix, str) or "\x00" in prefix:
            raise StateError(f"state list prefix {prefix!r} must be a str without NUL")
        if prefix:
            check_key(prefix)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StateError(f"state list limit {limit!r} must be an int >= 1")
        return [(k, decode(v)) for k, v in await self._backend.list(prefix, limit)]

    async def set(
        self,
        key: str,
        value: object,
        *,
        etag: str | None = None,
        absent: bool = False,
        ttl: float | None = None,
    ) -> str:
        """Store ``value`` under ``key`` and return its new ETag.

        With ``etag``, only if the key still has that ETag; with ``absent=True``, only if
        the key is absent (never written, deleted or expired): a create-only write, of
        which exactly one of concurrent creators wins. Otherwise ConcurrencyError and
        nothing written; ``etag`` and ``absent`` together are a StateError. With ``ttl``
        (seconds), the key disappears after that long; a set without ``ttl`` keeps the
        key until deleted.
        """
        write = _set(key, value, etag, absent, ttl)
        await self._backend.commit([write])
        return write.new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> bool:
        """Delete ``key``; whether it existed. With ``etag``, only if the key still has
        that ETag (else ConcurrencyError, also when the key is gone)."""
        (existed,) = await self._backend.commit([Write(check_key(key), None, _etag(key, etag))])
        return existed

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``async with store.transaction() as tx:`` — the writes staged on ``tx`` are
        committed together when the block ends, or not at all if it raises (the
        exception propagates) or if any condition (``etag=``, ``absent=True``) fails
        (ConcurrencyError)."""
        tx = Transaction(self._backend, self.on_outbox)
        try:
            yield tx
        except BaseException:
            tx._done = True  # rolled back: nothing staged reaches the backend
            raise
        await tx._commit()


class Transaction:
    """Writes staged for one atomic commit (see :meth:`StateStore.transaction`).

    Reads see the transaction's own staged writes, on every backend; other keys are
    read from the latest committed state, without locks (read committed). To make a
    read-modify-write safe, pass the ETag read to ``tx.set``/``tx.delete``, or
    ``absent=True`` to ``tx.set`` to create a key only if it does not exist: it is
    checked at commit, atomically with the writes. A ConcurrencyError raised by a
    staged write dooms the transaction even if caught: nothing of it is committed.
    """

    def __init__(self, backend: StateBackend, on_outbox: Callable[[], None] | None = None) -> None:
        self._backend = backend
        self._on_outbox = on_outbox
        self._writes: dict[str, Write] = {}
        self._outbox: list[OutboxRecord] = []
        self._doomed: ConcurrencyError | None = None
        self._done = False

    async def get(self, key: str) -> Any:
        """The value of ``key`` as this transaction would leave it."""
        item = await self.get_item(key)
        return None if item is None else item.value

    async def get_item(self, key: str) -> Item | None:
        """The value and ETag of ``key`` as this transaction would leave it."""
        check_key(key)
        staged = self._writes.get(key)
        if staged is not None:
            return None if staged.value is None else Item(decode(staged.value), staged.new_etag)
        found = await self._backend.get([key])
        return Item(decode(found[key][0]), found[key][1]) if key in found else None

    def set(
        self,
        key: str,
        value: object,
        *,
        etag: str | None = None,
        absent: bool = False,
        ttl: float | None = None,
    ) -> str:
        """Stage ``store.set(key, value, etag=etag, absent=absent, ttl=ttl)``; the ETag the
        key will have. ``absent=True`` on a key this transaction has already set fails
        at once (ConcurrencyError); after a staged delete it holds."""
        write = _set(key, value, etag, absent, ttl)
        self._stage(write)
        return write.new_etag

    def delete(self, key: str, *, etag: str | None = None) -> None:
        """Stage ``store.delete(key, etag=etag)``."""
        self._stage(Write(check_key(key), None, _etag(key, etag)))

    def publish(
        self,
        topic: str,
        data: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Stage the event ``shoal.publish(topic, data, key=key, headers=headers)`` would
        send, to be stored with this transaction's writes and sent after it commits (the
        transactional outbox); its id. Nothing is sent if the transaction rolls back.
        EventsError at once for bad input."""
        self._check_open()
        from shoal.events._outbox import stage_event  # events build on state, not the reverse

        return stage_event(self, topic, data, key=key, headers=headers)

    def add_outbox(self, record: OutboxRecord) -> None:
        """Append ``record`` to the backend's outbox in this commit (for shoal.events'
        ``tx.publish``; not meant to be called by services)."""
        self._check_open()
        self._outbox.append(record)

    def _stage(self, write: Write) -> None:
        """Fold ``write`` into the staged writes: one write per key, carrying the
        condition (ETag or absent) of the first write to that key; later conditions are
        resolved here, against what the transaction has staged."""
        self._check_open()
        earlier = self._writes.get(write.key)
        if earlier is None:
            self._writes[write.key] = write
            return
        stale = write.etag is not None and (earlier.value is None or write.etag != earlier.new_etag)
        if stale or (write.absent and earlier.value is not None):
            where = f"this transaction ({self._backend.where})"
            self._doomed = conflict(write.key, where, absent=write.absent)
            raise self._doomed
        self._writes[write.key] = Write(
            write.key, write.value, earlier.etag, write.new_etag, write.ttl, earlier.absent
        )

    def _check_open(self) -> None:
        if self._done:
            raise StateError("this state transaction has ended; open a new one")

    async def _commit(self) -> None:
        self._done = True
        if self._doomed is not None:
            raise self._doomed
        if self._writes or self._outbox:
            await self._backend.commit(list(self._writes.values()), self._outbox)
            if self._outbox and self._on_outbox is not None:
                self._on_outbox()


def _set(key: str, value: object, etag: str | None, absent: bool, ttl: float | None) -> Write:
    check_key(key)
    if not isinstance(absent, bool):
        raise StateError(f"state key {key!r}: absent={absent!r} must be True or False")
    if absent and etag is not None:
        raise StateError(
            f"state key {key!r}: a write takes etag= (the key must have that ETag) or "
            "absent=True (the key must not exist), not both; drop one"
        )
    return Write(key, encode(key, value), _etag(key, etag), new_etag(), check_ttl(key, ttl), absent)


def _etag(key: str, etag: str | None) -> str | None:
    if etag is not None and not isinstance(etag, str):
        raise StateError(f"state key {key!r}: etag {etag!r} is not a str from set/get_item")
    return etag
