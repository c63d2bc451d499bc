"""The state contract: every backend (SQLite, PostgreSQL, Redis) passes these tests."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, Any

import pytest

from shoal.state import (
    MAX_KEY_LENGTH,
    ConcurrencyError,
    Item,
    OutboxRecord,
    StateError,
    StateStore,
    Transaction,
)

if TYPE_CHECKING:
    from state_backends import Backend

pytest_plugins = ["state_backends"]

VALUES: list[Any] = [
    {"a": 1, "b": [1, 2.5, None, True], "c": {"d": "é ☃ \u0000"}},
    [1, "two", 3.0],
    "text",
    "",
    0,
    -(2**70),
    1.5,
    True,
    False,
    None,
    {},
    [],
]


async def test_set_then_get_returns_each_json_value(store: StateStore) -> None:
    for i, value in enumerate(VALUES):
        await store.set(f"k{i}", value)
    for i, value in enumerate(VALUES):
        assert await store.get(f"k{i}") == value
    item = await store.get_item("k9")
    assert item is not None
    assert item.value is None  # a stored None is not an absent key


async def test_get_of_a_missing_key_returns_none(store: StateStore) -> None:
    assert await store.get("nope") is None
    assert await store.get_item("nope") is None


async def test_every_write_returns_a_new_etag_that_get_item_reports(store: StateStore) -> None:
    first = await store.set("k", 1)
    second = await store.set("k", 2)
    assert first != second
    assert await store.get_item("k") == Item(2, second)


async def test_delete_reports_whether_the_key_existed(store: StateStore) -> None:
    await store.set("k", 1)
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert await store.delete("k") is False


async def test_get_many_returns_only_present_keys(store: StateStore) -> None:
    await store.set("a", 1)
    await store.set("b", {"x": 2})
    assert await store.get_many(["a", "b", "c", "a"]) == {"a": 1, "b": {"x": 2}}
    assert await store.get_many([]) == {}
    many = [f"m{i:04d}" for i in range(1200)]
    async with store.transaction() as tx:
        for key in many:
            tx.set(key, key)
    assert await store.get_many(many) == {k: k for k in many}


async def test_list_returns_keys_with_the_prefix_sorted(store: StateStore) -> None:
    for key in ["user:2", "user:10", "user:1", "users", "usea", "order:1"]:
        await store.set(key, key.upper())
    assert await store.list("user:") == [
        ("user:1", "USER:1"),
        ("user:10", "USER:10"),
        ("user:2", "USER:2"),
    ]
    assert [k for k, _ in await store.list("user")] == ["user:1", "user:10", "user:2", "users"]
    assert [k for k, _ in await store.list()] == [
        "order:1",
        "usea",
        "user:1",
        "user:10",
        "user:2",
        "users",
    ]
    assert [k for k, _ in await store.list("user:", limit=2)] == ["user:1", "user:10"]
    assert await store.list("zzz") == []


async def test_list_prefix_is_literal_not_a_pattern(store: StateStore) -> None:
    keys = ["a%b", "a%c", "axb", "a_b", "a_c", "aXb", "a*b", "a*", "a?b", "a[b]", "a\\b"]
    for key in keys:
        await store.set(key, 1)
    assert [k for k, _ in await store.list("a%")] == ["a%b", "a%c"]
    assert [k for k, _ in await store.list("a_")] == ["a_b", "a_c"]
    assert [k for k, _ in await store.list("a*")] == ["a*", "a*b"]
    assert [k for k, _ in await store.list("a[")] == ["a[b]"]
    assert [k for k, _ in await store.list("a\\")] == ["a\\b"]


async def test_list_orders_by_code_point_across_unicode(store: StateStore) -> None:
    keys = ["p:Z", "p:a", "p:é", "p:☃", "p:😀", "p:\U0010ffff", "p:\U0010ffffx", "q"]
    for key in keys:
        await store.set(key, key)
    assert [k for k, _ in await store.list("p:")] == sorted(keys[:-1])
    assert [k for k, _ in await store.list("p:\U0010ffff")] == ["p:\U0010ffff", "p:\U0010ffffx"]


async def test_expired_keys_are_invisible_to_every_read(
    backend: Backend, store: StateStore
) -> None:
    await store.set("short", 1, ttl=0.3)
    await store.set("long", 2, ttl=60)
    await store.set("forever", 3)
    assert await store.get("short") == 1
    await backend.advance(0.6)
    assert await store.get("short") is None
    assert await store.get_item("short") is None
    assert await store.get_many(["short", "long", "forever"]) == {"long": 2, "forever": 3}
    assert await store.list() == [("forever", 3), ("long", 2)]
    assert await store.delete("short") is False
    async with store.transaction() as tx:
        assert await tx.get("short") is None


async def test_set_without_ttl_makes_a_key_permanent(backend: Backend, store: StateStore) -> None:
    await store.set("k", 1, ttl=0.3)
    await store.set("k", 2)
    await backend.advance(0.6)
    assert await store.get("k") == 2


async def test_an_expired_key_can_be_written_again(backend: Backend, store: StateStore) -> None:
    etag = await store.set("k", 1, ttl=0.3)
    await backend.advance(0.6)
    with pytest.raises(ConcurrencyError):
        await store.set("k", 2, etag=etag)
    await store.set("k", 3)
    assert await store.get("k") == 3


async def test_set_with_the_current_etag_succeeds(store: StateStore) -> None:
    etag = await store.set("k", 1)
    new = await store.set("k", 2, etag=etag)
    assert await store.get_item("k") == Item(2, new)


async def test_set_with_a_stale_etag_raises_and_writes_nothing(store: StateStore) -> None:
    stale = await store.set("k", 1)
    current = await store.set("k", 2)
    with pytest.raises(ConcurrencyError, match="'k'") as caught:
        await store.set("k", 3, etag=stale)
    assert caught.value.key == "k"
    assert await store.get_item("k") == Item(2, current)


async def test_set_with_an_etag_of_a_deleted_or_missing_key_raises(store: StateStore) -> None:
    etag = await store.set("k", 1)
    await store.delete("k")
    with pytest.raises(ConcurrencyError):
        await store.set("k", 2, etag=etag)
    with pytest.raises(ConcurrencyError):
        await store.set("never", 2, etag=etag)
    assert await store.get("k") is None


async def test_delete_with_a_stale_etag_raises_and_keeps_the_key(store: StateStore) -> None:
    stale = await store.set("k", 1)
    current = await store.set("k", 2)
    with pytest.raises(ConcurrencyError):
        await store.delete("k", etag=stale)
    assert await store.get("k") == 2
    assert await store.delete("k", etag=current) is True
    with pytest.raises(ConcurrencyError):
        await store.delete("k", etag=current)


async def test_exactly_one_of_concurrent_writers_with_the_same_etag_wins(
    backend: Backend,
) -> None:
    stores = [await backend.open("svc") for _ in range(5)]
    etag = await stores[0].set("counter", 0)

    async def bump(store: StateStore, n: int) -> str | None:
        try:
            return await store.set("counter", n, etag=etag)
        except ConcurrencyError:
            return None

    results = await asyncio.gather(*(bump(stores[i % 5], i) for i in range(10)))
    winners = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert await stores[0].get_item("counter") == Item(winners[0][0], winners[0][1])


async def test_transaction_commits_every_write(store: StateStore) -> None:
    await store.set("gone", 1)
    async with store.transaction() as tx:
        tx.set("a", 1)
        tx.set("b", 2, ttl=60)
        tx.delete("gone")
        assert await store.get("a") is None  # nothing visible before the commit
    assert await store.get_many(["a", "b", "gone"]) == {"a": 1, "b": 2}


async def test_transaction_rolls_back_when_its_block_raises(store: StateStore) -> None:
    await store.set("keep", 1)
    staged: list[Transaction] = []

    async def write_then_fail() -> None:
        async with store.transaction() as tx:
            staged.append(tx)
            tx.set("a", 1)
            tx.delete("keep")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await write_then_fail()
    assert await store.get_many(["a", "keep"]) == {"keep": 1}
    with pytest.raises(StateError, match="ended"):
        staged[0].set("late", 1)


async def test_stale_etag_in_a_transaction_rolls_all_of_it_back(store: StateStore) -> None:
    seen = await store.get_item("k") or Item(None, await store.set("k", 0))
    await store.set("k", 1)  # another writer changes k after it was read
    await store.set("other", "old")

    async def write_with_stale_etag() -> None:
        async with store.transaction() as tx:
            tx.set("fresh", 1)
            tx.set("other", "new")
            tx.set("k", 2, etag=seen.etag)
            tx.delete("other2")

    with pytest.raises(ConcurrencyError):
        await write_with_stale_etag()
    assert await store.get_many(["fresh", "other", "k"]) == {"other": "old", "k": 1}


async def test_transaction_delete_with_stale_etag_rolls_back(store: StateStore) -> None:
    stale = await store.set("k", 1)
    await store.set("k", 2)

    async def delete_with_stale_etag() -> None:
        async with store.transaction() as tx:
            tx.set("a", 1)
            tx.delete("k", etag=stale)

    with pytest.raises(ConcurrencyError):
        await delete_with_stale_etag()
    assert await store.get_many(["a", "k"]) == {"k": 2}


async def test_transaction_reads_its_own_writes(store: StateStore) -> None:
    await store.set("old", "committed")
    async with store.transaction() as tx:
        assert await tx.get("old") == "committed"
        etag = tx.set("new", {"v": 1})
        assert await tx.get_item("new") == Item({"v": 1}, etag)
        tx.delete("old")
        assert await tx.get("old") is None
        second = tx.set("new", {"v": 2}, etag=etag)  # chained ETags inside one transaction
    assert await store.get_item("new") == Item({"v": 2}, second)
    assert await store.get("old") is None


async def test_a_conflict_caught_inside_a_transaction_still_dooms_it(
    store: StateStore,
) -> None:

    async def swallow_a_conflict() -> None:
        async with store.transaction() as tx:
            etag = tx.set("a", 1)
            tx.set("b", 1)
            with contextlib.suppress(ConcurrencyError):
                tx.set("a", 2, etag=etag + "x")

    with pytest.raises(ConcurrencyError):
        await swallow_a_conflict()
    assert await store.get_many(["a", "b"]) == {}


async def test_transaction_etag_check_passes_when_nothing_changed(store: StateStore) -> None:
    etag = await store.set("balance", 10)
    async with store.transaction() as tx:
        item = await tx.get_item("balance")
        assert item == Item(10, etag)
        tx.set("balance", item.value - 3, etag=item.etag)
        tx.set("log:1", -3)
    assert await store.get_many(["balance", "log:1"]) == {"balance": 7, "log:1": -3}


async def test_a_service_cannot_reach_another_services_keys(backend: Backend) -> None:
    a, b = await backend.open("alpha"), await backend.open("beta")
    etag = await a.set("shared", "a's")
    await a.set("x:1", 1)
    assert await b.get("shared") is None
    assert await b.get_item("shared") is None
    assert await b.get_many(["shared", "x:1"]) == {}
    assert await b.list() == []
    assert await b.list("x:") == []
    assert await b.delete("shared") is False
    with pytest.raises(ConcurrencyError):
        await b.set("shared", "b's", etag=etag)
    with pytest.raises(ConcurrencyError):
        await b.delete("shared", etag=etag)
    await b.set("shared", "b's")
    async with b.transaction() as tx:
        assert await tx.get("x:1") is None
        tx.delete("x:1")
    assert await a.get_many(["shared", "x:1"]) == {"shared": "a's", "x:1": 1}
    assert await b.get("shared") == "b's"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "not JSON serializable"),
        ({"a": {1, 2}}, "not JSON serializable"),
        (math.nan, "Out of range"),
        ({"a": [math.inf]}, "Out of range"),
        (b"bytes", "not JSON serializable"),
    ],
)
async def test_a_value_that_is_not_json_raises_and_writes_nothing(
    store: StateStore, value: object, why: str
) -> None:
    with pytest.raises(StateError, match=f"key 'k'.*{why}"):
        await store.set("k", value)

    async def stage_it() -> None:
        async with store.transaction() as tx:
            tx.set("other", 1)
            tx.set("k", value)

    with pytest.raises(StateError, match="key 'k'"):
        await stage_it()
    assert await store.get_many(["k", "other"]) == {}


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "1 to 512"),
        ("x" * (MAX_KEY_LENGTH + 1), "1 to 512"),
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
        (42, "keys are str"),
        (None, "keys are str"),
    ],
)
async def test_a_bad_key_raises_state_error(store: StateStore, key: Any, why: str) -> None:
    for call in (
        store.get(key),
        store.get_item(key),
        store.set(key, 1),
        store.delete(key),
        store.get_many([key]),
    ):
        with pytest.raises(StateError, match=why):
            await call
    with pytest.raises(StateError, match=why):
        async with store.transaction() as tx:
            tx.set(key, 1)
    assert await store.list() == []


async def test_the_longest_key_is_accepted(store: StateStore) -> None:
    key = "é" * MAX_KEY_LENGTH
    await store.set(key, 1)
    assert await store.list() == [(key, 1)]


async def test_bad_ttl_limit_and_etag_raise_state_error(store: StateStore) -> None:
    for ttl in (0, -1, math.nan, math.inf, "5"):
        with pytest.raises(StateError, match="ttl"):
            await store.set("k", 1, ttl=ttl)  # type: ignore[arg-type]
    for limit in (0, -5, 1.5):
        with pytest.raises(StateError, match="limit"):
            await store.list(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="etag"):
        await store.set("k", 1, etag=5)  # type: ignore[arg-type]
    assert await store.get("k") is None


async def test_state_survives_reopening_the_store(backend: Backend) -> None:
    first = await backend.open("svc")
    etag = await first.set("k", {"kept": True})
    await first.aclose()
    again = await backend.open("svc")
    assert await again.get_item("k") == Item({"kept": True}, etag)


async def test_a_closed_store_raises_state_error(backend: Backend) -> None:
    store = await backend.open("svc")
    await store.aclose()
    with pytest.raises(StateError, match="closed"):
        await store.get("k")
    await store.aclose()  # idempotent


async def test_outbox_records_commit_with_the_transaction(store: StateStore) -> None:
    async with store.transaction() as tx:
        tx.set("order:1", "new")
        tx.add_outbox(OutboxRecord("e1", '{"topic":"orders"}'))
        tx.add_outbox(OutboxRecord("e2", "second"))

    async def fail() -> None:
        async with store.transaction() as tx:
            tx.set("order:2", "new")
            tx.add_outbox(OutboxRecord("e3", "rolled back"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await fail()
    stale = await store.set("order:3", 0)
    await store.set("order:3", 1)

    async def conflict() -> None:
        async with store.transaction() as tx:
            tx.set("order:3", 2, etag=stale)
            tx.add_outbox(OutboxRecord("e4", "conflicted"))

    with pytest.raises(ConcurrencyError):
        await conflict()
    backend = store.backend
    assert await backend.outbox_pending(10) == [
        OutboxRecord("e1", '{"topic":"orders"}'),
        OutboxRecord("e2", "second"),
    ]
    await backend.outbox_remove(["e1", "unknown"])
    assert await backend.outbox_pending(10) == [OutboxRecord("e2", "second")]


async def test_a_create_only_write_stores_a_fresh_key(store: StateStore) -> None:
    etag = await store.set("k", {"new": True}, absent=True, ttl=60)
    assert await store.get_item("k") == Item({"new": True}, etag)


async def test_a_create_only_write_on_an_existing_key_raises_and_writes_nothing(
    store: StateStore,
) -> None:
    etag = await store.set("k", 1)
    with pytest.raises(ConcurrencyError, match=r"'k'.*already exists") as caught:
        await store.set("k", 2, absent=True)
    assert caught.value.key == "k"
    assert await store.get_item("k") == Item(1, etag)
    await store.delete("k")
    await store.set("k", 3, absent=True)  # a deleted key is absent again
    assert await store.get("k") == 3


async def test_a_create_only_write_on_an_expired_key_succeeds(
    backend: Backend, store: StateStore
) -> None:
    await store.set("k", 1, ttl=0.3)
    with pytest.raises(ConcurrencyError):
        await store.set("k", 2, absent=True)
    await backend.advance(0.6)
    etag = await store.set("k", 3, absent=True)
    await backend.advance(0.6)  # the new write is permanent: no TTL left over from the old
    assert await store.get_item("k") == Item(3, etag)
    async with store.transaction() as tx:
        tx.set("short", 1, ttl=0.3)
    await backend.advance(0.6)
    async with store.transaction() as tx:  # the same, inside a transaction
        tx.set("short", 2, absent=True)
        tx.set("other", 1)
    assert await store.get_many(["short", "other"]) == {"short": 2, "other": 1}


async def test_a_create_only_write_in_a_transaction_is_all_or_nothing(
    store: StateStore,
) -> None:
    await store.set("taken", "first")
    await store.set("gone", 1)
    etag = await store.set("balance", 10)

    async def create_a_taken_key() -> None:
        async with store.transaction() as tx:
            tx.set("fresh", 1, absent=True)
            tx.set("balance", 9, etag=etag)
            tx.delete("gone")
            tx.set("taken", "second", absent=True)
            tx.add_outbox(OutboxRecord("e1", "rolled back"))

    with pytest.raises(ConcurrencyError, match="'taken'"):
        await create_a_taken_key()
    assert await store.get_many(["fresh", "balance", "gone", "taken"]) == {
        "balance": 10,
        "gone": 1,
        "taken": "first",
    }
    assert await store.backend.outbox_pending(10) == []
    async with store.transaction() as tx:
        tx.set("fresh", 1, absent=True)
        tx.set("balance", 9, etag=etag)
        tx.delete("gone")
    assert await store.get_many(["fresh", "balance", "gone"]) == {"fresh": 1, "balance": 9}


async def test_create_only_writes_fold_with_the_transactions_own_writes(
    store: StateStore,
) -> None:
    await store.set("old", 1)
    async with store.transaction() as tx:
        etag = tx.set("new", 1, absent=True)
        second = tx.set("new", 2, etag=etag)  # chained: the create-only check stays
        tx.delete("old")
        tx.set("old", 2, absent=True)  # absent after the staged delete: an overwrite
    assert await store.get_item("new") == Item(2, second)
    assert await store.get("old") == 2

    async def create_twice() -> None:
        async with store.transaction() as tx:
            tx.set("other", 1)
            tx.set("twice", 1, absent=True)
            with contextlib.suppress(ConcurrencyError):
                tx.set("twice", 2, absent=True)  # the transaction has set it: dooms it

    with pytest.raises(ConcurrencyError, match="'twice'"):
        await create_twice()
    assert await store.get_many(["other", "twice"]) == {}

    async def create_then_delete_a_taken_key() -> None:
        async with store.transaction() as tx:
            tx.set("other", 1)
            tx.set("new", 3, absent=True)
            tx.delete("new")  # nets to no write, but the check still holds

    with pytest.raises(ConcurrencyError, match="'new'"):
        await create_then_delete_a_taken_key()
    assert await store.get_many(["other", "new"]) == {"new": 2}
    async with store.transaction() as tx:
        tx.set("brief", 1, absent=True)
        tx.delete("brief")
    assert await store.get("brief") is None


async def test_exactly_one_of_concurrent_creators_wins(backend: Backend) -> None:
    stores = [await backend.open("svc") for _ in range(5)]
    for round_ in range(3):
        key = f"run:{round_}"

        async def create(store: StateStore, n: int, key: str = key) -> str | None:
            try:
                if n % 2:
                    return await store.set(key, n, absent=True)
                async with store.transaction() as tx:
                    etag = tx.set(key, n, absent=True)
                    tx.set(f"{key}:by:{n}", n)
                return etag
            except ConcurrencyError:
                return None

        results = await asyncio.gather(*(create(stores[i % 5], i) for i in range(10)))
        winners = [(i, r) for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1, winners
        ((n, etag),) = winners
        assert await stores[0].get_item(key) == Item(n, etag)
        assert [k for k, _ in await stores[0].list(f"{key}:by:")] == (
            [] if n % 2 else [f"{key}:by:{n}"]
        )


async def test_a_write_with_both_etag_and_absent_is_refused(store: StateStore) -> None:
    etag = await store.set("k", 1)
    with pytest.raises(StateError, match="not both"):
        await store.set("k", 2, etag=etag, absent=True)
    with pytest.raises(StateError, match="absent"):
        await store.set("k", 2, absent="yes")  # type: ignore[arg-type]

    async def stage_both() -> None:
        async with store.transaction() as tx:
            tx.set("other", 1)
            tx.set("k", 2, etag=etag, absent=True)

    with pytest.raises(StateError, match="not both"):
        await stage_both()
    assert await store.get_many(["k", "other"]) == {"k": 1}
