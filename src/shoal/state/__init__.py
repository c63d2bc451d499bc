"""State: each service's own key-value store, with ETags, TTLs and transactions.

    store = shoal.state()              # in a service: its own store, as shoal.yaml says
    store = await open_sqlite(app_dir, "orders")   # or opened by hand (tests, scripts)
    etag = await store.set("order:1", {"status": "new"})
    item = await store.get_item("order:1")
    await store.set("order:1", {"status": "paid"}, etag=item.etag)  # ConcurrencyError if stale
    await store.set("user:ann", {"id": 7}, absent=True)  # ConcurrencyError if it exists
    async with store.transaction() as tx:
        tx.set("order:2", {"status": "new"})
        tx.delete("cart:7")

A write's condition is checked atomically with it (and with the rest of its
transaction): ``etag=E``, the key must still have ETag E; ``absent=True``, the key must
not exist (an expired key counts as absent), so of concurrent creators exactly one
wins. A failed condition raises ConcurrencyError naming the key, and nothing of the
write or its transaction is committed.

Backends: SQLite (one WAL file per service under ``DIR/.shoal/state/``), PostgreSQL
(asyncpg; one table per app, rows keyed by service) and Redis (keys under
``shoal:<app>:<service>:``). All pass the same contract suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.exceptions import ConcurrencyError as ConcurrencyError
from shoal.exceptions import StateError as StateError
from shoal.state._api import Item as Item
from shoal.state._api import StateStore as StateStore
from shoal.state._api import Transaction as Transaction
from shoal.state._backend import OutboxRecord as OutboxRecord
from shoal.state._backend import StateBackend as StateBackend
from shoal.state._backend import Write as Write
from shoal.state._codec import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from shoal.state._current import StateTarget as StateTarget
from shoal.state._current import open_state as open_state
from shoal.state._sqlite import open_sqlite as open_sqlite

if TYPE_CHECKING:
    from shoal.state._postgres import open_postgres as open_postgres
    from shoal.state._redis import open_redis as open_redis

__all__ = [
    "MAX_KEY_LENGTH",
    "ConcurrencyError",
    "Item",
    "OutboxRecord",
    "StateBackend",
    "StateError",
    "StateStore",
    "Transaction",
    "StateTarget",
    "Write",
    "open_postgres",
    "open_redis",
    "open_sqlite",
    "open_state",
]


def __getattr__(name: str) -> Any:
    """``open_postgres`` and ``open_redis`` load their drivers (asyncpg, redis-py: about
    0.1 s of imports) when first asked for, not in every instance that never uses them."""
    if name == "open_postgres":
        from shoal.state._postgres import open_postgres

        return open_postgres
    if name == "open_redis":
        from shoal.state._redis import open_redis

        return open_redis
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
